"""The registry's connections, kept from one of its calls to the next on SQLite.

``engine.begin()`` makes a Connection, checks a DBAPI connection out of the pool
and, at the end, checks it back in with a rollback: on SQLite that costs a large
share of a status change, and a job's start and end make several. A SQLite file
has no server that restarts and no network to drop a connection, so its
connections are kept between calls, each in a transaction only while a call runs
(no reader holds an old snapshot between calls). A server
database (PostgreSQL) goes through the pool each time: its pre-ping replaces a
connection the server dropped, and there a round trip costs more than this.

On SQLite the prebuilt statements of the hot path also run on the kept
connection's own DBAPI cursor (``ugro.registry.direct``): ``first``, ``rows`` and
``write`` take a statement and its parameters either way.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, cast

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.base import Executable

from ugro.registry.direct import DirectStatement, NotDirect, keys_of

#: A statement and its parameters: one mapping, or a list of them (executemany)
Step = tuple[Executable, Mapping[str, Any] | Sequence[Mapping[str, Any]]]


class RegistryConnections:
    """Transactions of the registry, on kept connections where that is safe."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.keep = engine.dialect.name == "sqlite"
        self.direct = self.keep  # prebuilt statements on the DBAPI cursor (see above)
        self._idle: list[Connection] = []  # list.pop and append are atomic: no lock
        self._pid = os.getpid()
        # Prebuilt statements (and an INSERT's columns) compiled for the direct
        # path, None where one cannot take it. Only statements built once come here.
        self._direct: dict[tuple[Executable, tuple[str, ...]], DirectStatement | None] = {}

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A connection in a transaction, committed at the end of the block and
        rolled back when the block raises (as ``engine.begin()``)."""
        if not self.keep:
            with self.engine.begin() as conn:
                yield conn
            return
        conn = self._take()
        try:
            with conn.begin():
                yield conn
        except BaseException:
            conn.close()  # in whatever state the error left it: not kept
            raise
        self._idle.append(conn)

    # Prebuilt statements ---------------------------------------------------------------

    def first(self, stmt: Executable, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The first row ``stmt`` returns (a SELECT, or a write ``RETURNING``), by
        column key; a write is committed."""
        [found] = self.write((stmt, params), rows=True)
        return found[0] if found else None

    def rows(self, stmt: Executable, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Every row ``stmt`` returns, by column key."""
        [found] = self.write((stmt, params), rows=True)
        return cast(list[dict[str, Any]], found)

    def write(self, *steps: Step, rows: bool = False, reads: int = 0) -> list[Any]:
        """Run ``steps`` in one transaction, one commit: for each, how many rows it
        changed, or with ``rows``, the rows it returned (by column key); the last
        ``reads`` steps are reads, whose rows are returned. Each statement must be
        one built once (``ugro.registry.statements``): on SQLite it is compiled at
        its first use and kept."""
        returns = [rows or n >= len(steps) - reads for n in range(len(steps))]
        direct = [
            statement
            for stmt, params in steps
            if (statement := self._direct_statement(stmt, params)) is not None
        ]
        if len(direct) < len(steps):
            return self._through_sqlalchemy(steps, returns)
        conn = self._take()
        dbapi: sqlite3.Connection = conn.connection.driver_connection  # type: ignore[assignment]
        cursor = dbapi.cursor()
        done: list[Any] = []
        statement = direct[0]
        try:
            for statement, (_, params), read in zip(direct, steps, returns, strict=True):
                if isinstance(params, Mapping):
                    cursor.execute(statement.sql, statement.bind(params))
                else:
                    cursor.executemany(statement.sql, [statement.bind(p) for p in params])
                # (a RETURNING's rows are read before the commit, which drops them)
                done.append(list(map(statement.read, cursor)) if read else cursor.rowcount)
            dbapi.commit()  # (a read alone began no transaction: nothing to commit)
        except BaseException as exc:
            dbapi.rollback()
            conn.close()  # in whatever state the error left it: not kept
            if isinstance(exc, sqlite3.Error):
                raise DBAPIError.instance(
                    statement.sql, None, exc, sqlite3.Error, dialect=self.engine.dialect
                ) from exc
            raise
        finally:
            cursor.close()
        self._idle.append(conn)
        return done

    def _direct_statement(
        self, stmt: Executable, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]
    ) -> DirectStatement | None:
        if not self.direct:
            return None
        try:
            columns = keys_of([params] if isinstance(params, Mapping) else params, stmt)
        except NotDirect:
            return None
        key = (stmt, columns)
        if key not in self._direct:
            try:
                self._direct[key] = DirectStatement(stmt, self.engine.dialect, columns)
            except NotDirect:
                self._direct[key] = None
        return self._direct[key]

    def _through_sqlalchemy(self, steps: Sequence[Step], returns: Sequence[bool]) -> list[Any]:
        done: list[Any] = []
        with self.begin() as conn:
            for (stmt, params), read in zip(steps, returns, strict=True):
                result = conn.execute(stmt, params)
                done.append([dict(row._mapping) for row in result] if read else result.rowcount)
        return done

    # Kept connections ------------------------------------------------------------------

    def _take(self) -> Connection:
        if self._pid != os.getpid():
            # A forked child: the parent's connections are the parent's to close.
            self._idle, self._pid = [], os.getpid()
        try:
            return self._idle.pop()
        except IndexError:
            return self.engine.connect()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
