"""The registry's connections, kept from one of its calls to the next on SQLite.

``engine.begin()`` makes a Connection, checks a DBAPI connection out of the pool
and, at the end, checks it back in with a rollback: about 60 µs of CPU, a third
of what a status change costs on SQLite, and a job's start and end make five of
them. A SQLite file has no server that restarts and no network to drop a
connection, so its connections are kept between calls, each in a transaction
only while a call runs (no reader holds an old snapshot between calls). A server
database (PostgreSQL) goes through the pool each time: its pre-ping replaces a
connection the server dropped, and there a round trip costs more than this.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Connection, Engine


class RegistryConnections:
    """Transactions of the registry, on kept connections where that is safe."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.keep = engine.dialect.name == "sqlite"
        self._idle: list[Connection] = []  # list.pop and append are atomic: no lock
        self._pid = os.getpid()

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
