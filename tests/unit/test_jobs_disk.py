"""Telling a failure for lack of room from the others (pure)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from ugro.jobs.disk import (
    NEARLY_FULL_BYTES,
    Space,
    failed_for_room,
    free_space,
    is_no_room,
    log_shows_no_room,
    no_room_line,
    write_failure,
)

pytestmark = pytest.mark.timeout(10)

ROOMY = Space(free=50 * NEARLY_FULL_BYTES, total=100 * NEARLY_FULL_BYTES)
FULL = Space(free=4096, total=100 * NEARLY_FULL_BYTES)


@pytest.mark.parametrize(
    "line",
    [
        b"OSError: [Errno 28] No space left on device",
        b"yes: standard output: No space left on device",
        b"dd: error writing 'out.bin': No space left on device",
        b"write failed: Disk quota exceeded",
        b"torch save failed (ENOSPC)",
    ],
)
def test_a_log_that_says_the_disk_was_full_is_read_as_such(line: bytes) -> None:
    tail = b"epoch 3/5 loss=0.41\n" + line + b"\n"
    assert log_shows_no_room(tail)
    assert failed_for_room(tail, ROOMY)
    assert no_room_line(tail) == line.decode()


@pytest.mark.parametrize(
    "tail",
    [b"ValueError: bad config\n", b"torch.OutOfMemoryError: CUDA out of memory\n", b""],
)
def test_other_failures_with_room_left_are_not(tail: bytes) -> None:
    assert not log_shows_no_room(tail)
    assert not failed_for_room(tail, ROOMY)
    assert not failed_for_room(tail, None)  # (the filesystem could not be read)
    assert no_room_line(tail) is None


def test_a_failure_on_a_full_filesystem_is_one_whatever_its_log_says() -> None:
    # the job's own last words could not be written: the log is on the full disk
    assert FULL.nearly_full and not ROOMY.nearly_full
    assert failed_for_room(b"epoch 3/5 loss=0.41\n", FULL)


def test_only_a_write_refused_for_lack_of_room_is_no_room() -> None:
    assert is_no_room(OSError(errno.ENOSPC, "No space left on device"))
    assert is_no_room(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_no_room(PermissionError(errno.EACCES, "Permission denied"))
    assert not is_no_room(ValueError("no space"))


def test_the_message_of_a_failed_write_names_the_cause(tmp_path: Path) -> None:
    full = write_failure(tmp_path, OSError(errno.ENOSPC, "No space left on device"))
    assert full == f"no space left on the filesystem of {tmp_path}: the data dir is full"
    readonly = write_failure(tmp_path, OSError(errno.EROFS, "Read-only file system"))
    assert readonly == f"cannot write in {tmp_path}: Read-only file system"


def test_free_space_is_read_from_the_filesystem_or_none(tmp_path: Path) -> None:
    space = free_space(tmp_path)
    assert space is not None and 0 <= space.free <= space.total
    assert free_space(tmp_path / "gone") is None
