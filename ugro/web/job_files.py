"""A job's log and metrics as a page follows them: the tail of a log (any rank's,
any attempt's) and ``metrics.jsonl``, then what is added to them while the page
is open.

Which file is read comes from ``ugro.job_logs.log_file`` on a job read from the
registry by a valid id, and a rank, node or attempt the job has: nothing a
request gives becomes part of a path.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ugro.client import Client
from ugro.job_logs import log_file
from ugro.job_metrics import parse_records, read_records
from ugro.web.live import KEEPALIVE, encode_event

#: How much of a log a page starts with (bytes), and of metrics (lines).
LOG_TAIL = 64 * 1024
METRICS_TAIL = 5000
#: How often (s) an open page's files are looked at: a stat each while unchanged.
FOLLOW_INTERVAL = 0.25
#: The most read from a file at once (a burst of output is sent in parts).
_CHUNK = 256 * 1024


@dataclass(frozen=True)
class LogRequest:
    """Which log of a job: rank, node (a gang member's) or attempt, each None for
    the default (the training log of the newest attempt)."""

    rank: int | None = None
    node: str | None = None
    attempt: int | None = None

    @classmethod
    def of(cls, query: dict[str, str]) -> LogRequest:
        """From query parameters.

        Raises:
            ValueError: a rank or attempt that is not a number.
        """

        def number(key: str) -> int | None:
            value = query.get(key)
            return int(value) if value not in (None, "") else None

        return cls(number("rank"), query.get("node") or None, number("attempt"))


def job_files(client: Client, job_id: str, which: LogRequest) -> tuple[Path, Path]:
    """(the log, metrics.jsonl) of a job.

    Raises:
        SpecError: not a valid job id; a rank, node or attempt the job does not have.
        JobNotFound: no job has that id.
    """
    job = client.get(job_id)
    path = log_file(client.rt, job, which.attempt, which.rank, which.node)
    return path, client.rt.paths(job.id).metrics


class FileFollower:
    """Reads what was added to one file since the last read; starts over when the
    file is replaced (a new attempt's log under the same name)."""

    def __init__(self, path: Path, whole_lines: bool = False) -> None:
        self.path = path
        self.whole_lines = whole_lines
        self.offset = 0
        self.inode: int | None = None
        self._stamp: tuple[int, int, int] | None = None

    def start_at_tail(self, size: int) -> bool:
        """Position the first read ``size`` bytes before the end (at a line start);
        returns whether the file exists."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        self.offset = max(0, st.st_size - size)
        if self.offset:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                skipped = handle.readline()
                self.offset += len(skipped)
        return True

    def read_new(self) -> tuple[bool, bytes]:
        """(whether the file was replaced since the last read, what was added)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False, b""
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._stamp:
            return False, b""
        replaced = self.inode is not None and st.st_ino != self.inode
        if replaced or st.st_size < self.offset:
            self.offset = 0
            replaced = True
        with self.path.open("rb") as handle:
            self.inode = os.fstat(handle.fileno()).st_ino
            handle.seek(self.offset)
            data = handle.read(_CHUNK)
        if self.whole_lines and data:
            end = data.rfind(b"\n") + 1
            data = data[:end]
        self.offset += len(data)
        if self.offset >= st.st_size:
            self._stamp = stamp  # all of it read: the next look is a stat
        return replaced, data


def read_metrics(path: Path, last: int = METRICS_TAIL) -> list[dict[str, Any]]:
    """The last ``last`` records of a metrics file (none when it is missing)."""
    try:
        return read_records(path, last)
    except OSError:
        return []


def read_log_tail(path: Path, size: int = LOG_TAIL) -> str:
    follower = FileFollower(path)
    if not follower.start_at_tail(size):
        return ""
    return follower.read_new()[1].decode("utf-8", errors="replace")


async def follow_job(log: Path, metrics: Path, is_gone: Callable[[], Any]) -> AsyncIterator[bytes]:
    """A job page's events: ``log`` (text added to the log), ``log-reset`` (a new
    file: a new attempt), ``metrics`` (records added) and ``metrics-reset``, each
    as they are written, until the page goes."""
    logs = FileFollower(log)
    logs.start_at_tail(LOG_TAIL)
    records = FileFollower(metrics, whole_lines=True)
    _, first = await asyncio.to_thread(records.read_new)
    yield b"retry: 1000\n" + encode_event("metrics-reset", parse_records(first)[-METRICS_TAIL:])
    quiet = 0.0
    while True:
        (log_new, log_data), (metrics_new, metrics_data) = await asyncio.to_thread(
            lambda: (logs.read_new(), records.read_new())
        )
        if log_new:
            yield encode_event("log-reset", {})
        if log_data:
            yield encode_event("log", log_data.decode("utf-8", errors="replace"))
        if metrics_new:
            yield encode_event("metrics-reset", [])
        if metrics_data:
            yield encode_event("metrics", parse_records(metrics_data))
        if log_data or metrics_data:
            quiet = 0.0
            continue  # more may be waiting: read on before sleeping
        quiet += FOLLOW_INTERVAL
        if quiet >= KEEPALIVE:
            if await is_gone():
                return
            yield b": keepalive\n\n"
            quiet = 0.0
        await asyncio.sleep(FOLLOW_INTERVAL)
