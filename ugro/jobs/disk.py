"""Room to write in the results tree: how much is left, and the signs that a job, or
one of ugro's own writes, failed for lack of it.

A job that fills its folder's filesystem often cannot say so: the message about
the failed write goes to its log, on the same full filesystem. So a failure is
taken for a full disk when its log says so *or* when the filesystem is (almost)
full as the job ends. Pure, but for ``free_space``, which asks the kernel.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

#: errno values of a write refused for lack of room: the filesystem is full, or the
#: writer's quota on it is.
_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT})
#: How a log shows a write refused for lack of room: the C library's messages
#: (Python's ``OSError: [Errno 28] No space left on device`` among them) and the
#: errno names some programs print instead.
_NO_ROOM_IN_LOG = re.compile(rb"No space left on device|Disk quota exceeded|\bENOSPC\b|\bEDQUOT\b")
#: A filesystem with less room than this, as a job on it fails, counts as full.
#: A job that filled it leaves at most a block or two, and anything still free
#: is far too little for it to have gone on (1 MiB: a few blocks of any
#: filesystem the lab's data dir is on, ext4, XFS or NFS).
NEARLY_FULL_BYTES = 1 << 20


@dataclass(frozen=True)
class Space:
    """The room on one filesystem, in bytes."""

    #: what an unprivileged writer may still use (ext4 keeps a share for root)
    free: int
    total: int

    @property
    def nearly_full(self) -> bool:
        return self.free < NEARLY_FULL_BYTES


def free_space(path: Path) -> Space | None:
    """The room on the filesystem holding ``path``; None when it cannot be read."""
    try:
        stats = os.statvfs(path)
    except OSError:
        return None
    return Space(stats.f_bavail * stats.f_frsize, stats.f_blocks * stats.f_frsize)


def is_no_room(exc: BaseException) -> TypeGuard[OSError]:
    """Whether ``exc`` is a write refused for lack of room (ENOSPC, EDQUOT)."""
    return isinstance(exc, OSError) and exc.errno in _NO_ROOM


def log_shows_no_room(tail: bytes) -> bool:
    """Whether a log's tail shows a write refused for lack of room."""
    return _NO_ROOM_IN_LOG.search(tail) is not None


def no_room_line(tail: bytes) -> str | None:
    """The last line of a log's tail that shows a write refused for lack of room."""
    for line in reversed(tail.splitlines()):
        if _NO_ROOM_IN_LOG.search(line):
            return line.decode("utf-8", "replace").strip()[:500]
    return None


def failed_for_room(tail: bytes, space: Space | None) -> bool:
    """Whether a job that failed, with this log tail, failed for lack of room: its
    log says so, or its folder's filesystem (``space``) is full as it ends."""
    return log_shows_no_room(tail) or (space is not None and space.nearly_full)


def no_room_error(where: Path, space: Space | None) -> str:
    """The ``error`` of an attempt that ended for lack of room under ``where``."""
    if space is None:
        return f"no space left on the filesystem of {where}"
    free, total = space.free / 2**20, space.total / 2**20
    return f"no space left on the filesystem of {where} ({free:.1f} of {total:.0f} MB free)"


def write_failure(where: Path, exc: OSError) -> str:
    """One line on why ugro could not write under ``where``, naming the cause."""
    if is_no_room(exc):
        return f"no space left on the filesystem of {where}: the data dir is full"
    return f"cannot write in {where}: {exc.strerror or exc}"
