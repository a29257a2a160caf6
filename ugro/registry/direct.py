"""The registry's prebuilt statements run on SQLite's own connection.

SQLAlchemy's execution of a statement built once (``ugro.registry.statements``)
still costs several times what SQLite takes to run it: its cache lookup, its
execution context, its parameter and row processing and its transaction object,
and a job's submit, start and end make six such calls. So on SQLite
each of those statements is compiled by SQLAlchemy once, for the engine's own
dialect, and run on the DBAPI cursor: the same SQL, the same conversions of
values (each type's own bind and result processors, which SQLAlchemy would have
applied), the same errors (SQLAlchemy's, wrapping the driver's).

It relies on SQLAlchemy's compiler internals (``positiontup``, ``insert_prefetch``,
the types' bind and result processors): ``pyproject.toml`` bounds SQLAlchemy to
the minor version tested, and the twin test in
``tests/integration/test_registry.py`` fails when an upgrade changes them (every
hot statement must take this path and return what SQLAlchemy returns).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Insert, Select, UpdateBase
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import ArgumentError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler

_REQUIRED = object()  # a parameter that every execution must give


class NotDirect(Exception):
    """A statement this module cannot run directly (an expanding IN list, a default
    computed by SQL or Python code): the caller runs it through SQLAlchemy."""


class DirectStatement:
    """One statement compiled by SQLAlchemy for a DBAPI with positional
    parameters, with what binding its parameters and reading its rows takes."""

    def __init__(
        self, stmt: Executable, dialect: Dialect, column_keys: Sequence[str] | None = None
    ) -> None:
        if not isinstance(stmt, ClauseElement):
            raise NotDirect(f"not a statement SQLAlchemy compiles: {type(stmt).__name__}")
        compiled = stmt.compile(dialect=dialect, column_keys=list(column_keys or ()) or None)
        if not isinstance(compiled, SQLCompiler):
            raise NotDirect(f"not compiled to SQL: {type(stmt).__name__}")
        if compiled.positiontup is None:
            raise NotDirect("the dialect's parameters are not positional")
        binds = compiled.binds
        defaults: dict[str, Any] = {}
        for column in getattr(compiled, "insert_prefetch", ()):
            # an INSERT's column left out: its Python default, as SQLAlchemy fills in
            default = column.default
            if default is None or not default.is_scalar:
                raise NotDirect(f"column {column.key!r} has a default computed per row")
            defaults[column.key] = default.arg
        self.sql = compiled.string
        # (name, default or _REQUIRED, processor) in the order of the placeholders
        self.params: list[tuple[str, Any, Any]] = []
        for name in compiled.positiontup:
            bind = binds[name]
            if bind.expanding:
                raise NotDirect(f"parameter {name!r} is a list expanded per execution")
            default = defaults.get(name, _REQUIRED if bind.required else bind.value)
            processor = dialect.type_descriptor(bind.type).bind_processor(dialect)
            self.params.append((name, default, processor))
        # (key, processor) of each column of a row it returns
        self.columns: list[tuple[str, Any]] = [
            (column.key, dialect.type_descriptor(column.type).result_processor(dialect, None))
            for column in _returned(stmt)
        ]

    def bind(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """The positional parameters for ``values`` (by parameter name)."""
        bound = []
        for name, default, processor in self.params:
            value = values.get(name, default)
            if value is _REQUIRED:
                raise ArgumentError(f"a value is required for parameter {name!r}")
            bound.append(value if processor is None else processor(value))
        return tuple(bound)

    def read(self, row: Sequence[Any]) -> dict[str, Any]:
        """A row the statement returned, by column key, its values converted."""
        return {
            key: value if processor is None else processor(value)
            for (key, processor), value in zip(self.columns, row, strict=True)
        }


def _returned(stmt: Executable) -> Iterable[Any]:
    """The columns of the rows ``stmt`` returns (none for a plain write)."""
    if isinstance(stmt, Select):
        return stmt.selected_columns
    if isinstance(stmt, UpdateBase):
        return [description["expr"] for description in stmt.returning_column_descriptions]
    raise NotDirect(f"not a statement of rows: {type(stmt).__name__}")


def keys_of(rows: Sequence[Mapping[str, Any]], stmt: Executable) -> tuple[str, ...]:
    """The columns an INSERT of ``rows`` sets (none for another statement): the same
    in every row, or NotDirect (SQLAlchemy compiles a batch against its first row)."""
    if not isinstance(stmt, Insert):
        return ()
    keys = tuple(rows[0]) if rows else ()
    if any(row.keys() != rows[0].keys() for row in rows):
        raise NotDirect("rows that set different columns")
    return keys
