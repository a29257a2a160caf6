"""The cluster file: the nodes the health sweep probes over SSH (its
``[sharing]`` table is scheduling's, ``ugro.scheduling.sharing``).

TOML, ``UGRO_CLUSTER_FILE`` or ``<data_dir>/cluster.toml``; each node is a
``[[node]]`` table with ``name``, ``host``, and optionally ``port``, ``user``,
``key`` and ``gpu_query``. Anything else is refused with the file, the entry and
what is wrong named.
"""

from __future__ import annotations

import string
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ugro.errors import InventoryError

_NODE_KEYS = ("name", "host", "port", "user", "key", "gpu_query")
# Node names end up in queue names and Redis keys.
_NAME_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-_.")


@dataclass(frozen=True)
class ClusterNode:
    """One ``[[node]]`` entry of the cluster file."""

    name: str
    host: str
    port: int = 22
    user: str | None = None  # None: the user ugro runs as
    key: Path | None = None  # None: paramiko's defaults (agent, ~/.ssh/id_*)
    gpu_query: bool = False

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def load_cluster(path: Path) -> list[ClusterNode]:
    """The nodes listed in a cluster file, in file order.

    Raises:
        InventoryError: the file cannot be read or parsed, or an entry is invalid
            (unknown key, missing or empty name or host, duplicate name, bad port...);
            the message names the file, the entry and what is wrong.
    """
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InventoryError(f"cluster file {path}: cannot read it: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InventoryError(f"cluster file {path}: not valid TOML: {exc}") from exc
    # ([sharing] is read by scheduling: ugro.scheduling.sharing)
    unknown = sorted(set(document) - {"node", "sharing"})
    if unknown:
        raise InventoryError(
            f"cluster file {path}: unknown top-level key {unknown[0]!r}"
            " (nodes are listed as [[node]] tables, shares and quotas under [sharing])"
        )
    entries = document.get("node", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise InventoryError(f"cluster file {path}: 'node' must be [[node]] tables")
    nodes: list[ClusterNode] = []
    seen: dict[str, int] = {}
    for number, entry in enumerate(entries, start=1):
        node = _parse_node(entry, f"cluster file {path}, node #{number}", path.parent)
        if node.name in seen:
            raise InventoryError(
                f"cluster file {path}, node #{number}: duplicate name {node.name!r}"
                f" (already node #{seen[node.name]})"
            )
        seen[node.name] = number
        nodes.append(node)
    return nodes


def _parse_node(entry: dict[str, Any], where: str, base: Path) -> ClusterNode:
    name = entry.get("name")
    if isinstance(name, str) and name:
        where = f"{where} ({name!r})"
    for field in entry:
        if field not in _NODE_KEYS:
            raise InventoryError(
                f"{where}: unknown key {field!r} (allowed: {', '.join(_NODE_KEYS)})"
            )
    for field in ("name", "host"):
        if field not in entry:
            raise InventoryError(f"{where}: missing {field!r}")
    name = _text(entry, "name", where)
    if not set(name) <= _NAME_CHARACTERS:
        raise InventoryError(
            f"{where}: name {name!r} may only hold letters, digits, '-', '_' and '.'"
        )
    host = _text(entry, "host", where)
    port = entry.get("port", 22)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InventoryError(f"{where}: port must be an integer from 1 to 65535, not {port!r}")
    user = _text(entry, "user", where) if "user" in entry else None
    key: Path | None = None
    if "key" in entry:
        # A relative key path is relative to the cluster file, not to the process.
        key = base / Path(_text(entry, "key", where)).expanduser()
    gpu_query = entry.get("gpu_query", False)
    if not isinstance(gpu_query, bool):
        raise InventoryError(f"{where}: gpu_query must be true or false, not {gpu_query!r}")
    return ClusterNode(name, host, port, user, key, gpu_query)


def _text(entry: dict[str, Any], key: str, where: str) -> str:
    value = entry[key]
    if not isinstance(value, str) or not value.strip() or value != value.strip():
        raise InventoryError(
            f"{where}: {key} must be a non-empty string without surrounding spaces, not {value!r}"
        )
    return value
