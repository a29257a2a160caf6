"""Reading a sweep file: YAML, with a safe loader only, every error named by its
file, line and key (``sweep.yaml line 4: grid.lr: the list is empty``)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped,unused-ignore]
from pydantic import ValidationError

from ugro.errors import SpecError
from ugro.jobs.sweep import SweepSpec, describe_error

_BOOL_TAG = "tag:yaml.org,2002:bool"
_FLOAT_TAG = "tag:yaml.org,2002:float"


class _Loader(yaml.SafeLoader):  # type: ignore[misc,unused-ignore]
    """``yaml.SafeLoader`` reading numbers and booleans as YAML 1.2 does: ``1e-4``
    is a float (YAML 1.1 reads a string) and only true/false are booleans (not
    yes/no/on/off, which are fair values of a swept string)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL_TAG, _FLOAT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)
_Loader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _line(root: Any, loc: Sequence[str | int]) -> int:
    """The 1-based line of the deepest YAML node on the path ``loc`` (a mapping
    entry's line is its key's)."""
    node = root
    line: int = root.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            entry = next((e for e in node.value if e[0].value == str(part)), None)
            if entry is None:
                break
            line, node = entry[0].start_mark.line + 1, entry[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _duplicate_key(node: Any) -> str | None:
    """``line N: key 'k' is given twice``, for the first key a mapping repeats:
    YAML readers silently keep the last one, which hides a typo'd sweep."""
    children = node.value if isinstance(node, yaml.SequenceNode) else []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if key.value in seen:
                return f"line {key.start_mark.line + 1}: key {key.value!r} is given twice"
            seen.add(key.value)
            children.append(value)
    return next((found for child in children if (found := _duplicate_key(child))), None)


def load_sweep(path: Path) -> SweepSpec:
    """The sweep described by the YAML file at ``path``.

    Raises:
        SpecError: the file cannot be read or is not a valid sweep; the message
            names the file, the line and the key, e.g.
            ``sweep.yaml line 4: grid.lr: the list is empty``.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read it: {exc}") from None
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        data = None if root is None else loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        # The problem's line, and the context's (where an unclosed bracket opened).
        mark, context = exc.problem_mark or exc.context_mark, exc.context_mark
        where = f" line {mark.line + 1}" if mark else ""
        also = f" ({exc.context} on line {context.line + 1})" if context and exc.problem else ""
        raise SpecError(f"{path}{where}: {exc.problem or exc.context}{also}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: {exc}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise SpecError(f"{path} line 1: expected keys such as name, command and grid")
    duplicate = _duplicate_key(root)
    if duplicate:
        raise SpecError(f"{path} {duplicate}")
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        found = sorted((_line(root, err["loc"]), describe_error(err)) for err in exc.errors())
        raise SpecError("; ".join(f"{path} line {n}: {what}" for n, what in found)) from None
