"""The results tree: a job's folder has the names of any run's folder, trees and
attempt folders made ahead of time are the same as those made on the spot, no two
takers get the same one, and what ugro writes into a tree the lab can read."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from ugro.errors import SpecError
from ugro.jobs.paths import (
    RUN_FILES,
    JobPaths,
    RunPaths,
    build_attempt_logs,
    build_tree,
    write_json_atomic,
)
from ugro.jobs.spares import SparePool

pytestmark = pytest.mark.timeout(60)


def layout(root: Path) -> dict[str, tuple[bool, int, int]]:
    """Every entry under ``root``: (is a directory, permission bits, size)."""
    found = {}
    for path in sorted(root.rglob("*")):
        info = path.stat()
        found[str(path.relative_to(root))] = (path.is_dir(), info.st_mode & 0o777, info.st_size)
    return found


def test_a_job_s_folder_has_the_names_of_any_run_s_folder(tmp_path: Path) -> None:
    # Given a job's tree, made as a submit makes it
    paths = JobPaths(tmp_path / "jobs", "job-a")
    paths.create({"job_id": "job-a"})
    # Then every entry at its top is one a scan knows a run's folder by
    assert sorted(p.name for p in paths.root.iterdir()) == sorted(
        {"config.json", "metrics.jsonl", "console.log", "logs", "checkpoints", "tensorboard"}
    )
    assert {p.name for p in paths.root.iterdir()} <= RUN_FILES
    # and its files are those of any run's folder there, the trackers' view of it
    run = RunPaths(paths.root)
    for name in ("config", "metadata", "metrics", "progress", "console", "evaluation_scores"):
        assert getattr(paths, name) == getattr(run, name), name
    for name in ("logs", "training_log", "checkpoints", "tensorboard"):
        assert getattr(paths, name) == getattr(run, name), name
    assert paths.attempt_training_log(2) == run.logs / "attempt_2" / "training.log"
    assert paths.checkpoint("epoch_3.npz") == run.checkpoints / "epoch_3.npz"
    assert run.epoch(4).validation_scores == run.root / "epoch_4" / "validation_scores.json"


def test_a_job_id_that_is_no_safe_folder_name_is_refused(tmp_path: Path) -> None:
    for bad in ("../up", "a/b", "", ".hidden"):
        with pytest.raises(SpecError, match="not a valid job id"):
            JobPaths(tmp_path, bad)


def test_epoch_folders_are_listed_by_epoch_whatever_their_padding(tmp_path: Path) -> None:
    # Given epoch folders written in no order, one zero-padded, and look-alikes
    for name in ("epoch_10", "epoch_2", "epoch_007", "epoch_x"):
        (tmp_path / name).mkdir()
    (tmp_path / "epoch_3").write_text("a file, not an epoch's folder")
    # Then the epochs are the folders named epoch_<n>, in order, by their own names
    listed = [(epoch, folder.root.name) for epoch, folder in RunPaths(tmp_path).epochs()]
    assert listed == [(2, "epoch_2"), (7, "epoch_007"), (10, "epoch_10")]
    # and a run's folder that cannot be read has none
    assert RunPaths(tmp_path / "gone").epochs() == []


def test_a_job_tree_from_a_spare_is_the_tree_made_on_the_spot(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    pool = SparePool(jobs, "trees", build_tree, keep=2)
    try:
        # Given no spare yet, the first job's tree is made on the spot
        fresh = JobPaths(jobs, "job-a")
        fresh.create({"job_id": "job-a"}, pool)
        # When spares are ready, the next job's tree is a spare renamed into place
        pool.refill()
        pool.close()  # no refill from here on: the spares stay as they are
        spare = next(n for n in os.listdir(pool.dir) if not n.startswith("."))
        tree_inode = (pool.dir / spare).stat().st_ino
        spared = JobPaths(jobs, "job-b")
        spared.create({"job_id": "job-a"}, pool)
        assert spared.root.stat().st_ino == tree_inode
        # Then both trees are the same, config included, and no staging name is left
        assert layout(spared.root) == layout(fresh.root)
        assert (spared.root.stat().st_mode & 0o777) == 0o755
        assert spared.config.read_text() == fresh.config.read_text()
        assert sorted(p.name for p in jobs.iterdir()) == [".spare", "job-a", "job-b"]
    finally:
        pool.close()


def test_an_attempt_folder_from_a_spare_holds_an_empty_rank_log(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    paths = JobPaths(jobs, "job-c")
    paths.create({})
    pool = SparePool(jobs, "attempts", build_attempt_logs, keep=1)
    try:
        assert pool.refill() == 1
        [spare] = [pool.dir / n for n in os.listdir(pool.dir) if not n.startswith(".")]
        folder_inode = spare.stat().st_ino
        log = paths.start_attempt_logs(1, pool)
        assert log == paths.logs / "attempt_1" / "rank_0.log"
        assert log.parent.stat().st_ino == folder_inode  # the spare, renamed
        assert log.read_bytes() == b""
        # an attempt whose folder exists already keeps it and what it holds
        log.write_bytes(b"kept")
        assert paths.start_attempt_logs(1, pool).read_bytes() == b"kept"
        assert log.parent.stat().st_ino == folder_inode
    finally:
        pool.close()


def test_concurrent_takers_never_get_the_same_spare(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    pool = SparePool(jobs, "trees", build_tree, keep=20)
    pool.refill()
    pool.close()  # no refill while they take
    got: list[Path] = []
    lock = threading.Lock()

    def taker(n: int) -> None:
        for i in range(10):
            where = jobs / f".new-{n}-{i}"
            if pool.take(where):
                with lock:
                    got.append(where)

    threads = [threading.Thread(target=taker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 20  # each spare taken exactly once, every one of them
    assert all((where / "config.json").exists() for where in got)


def ready(pool: SparePool) -> int:
    names = os.listdir(pool.dir) if pool.dir.is_dir() else []
    return len([n for n in names if not n.startswith(".")])


def wait_for_spares(pool: SparePool, count: int) -> None:
    deadline = time.monotonic() + 30
    while ready(pool) < count:
        assert time.monotonic() < deadline, f"{ready(pool)} of {count} spares"
        time.sleep(0.05)


def test_the_refill_thread_tops_the_pool_up_and_clears_a_dead_makers_leftover(
    tmp_path: Path,
) -> None:
    jobs = tmp_path / "jobs"
    pool = SparePool(jobs, "trees", build_tree, keep=3)
    leftover = pool.dir / ".making-dead"
    pool.dir.mkdir(parents=True)
    build_tree(leftover)  # as a process killed while making it left it
    long_ago = time.time() - 3600
    os.utime(leftover, (long_ago, long_ago))
    try:
        assert not pool.take(jobs / ".new-x")  # none ready
        pool.replenish()  # the submit is done: the thread makes them
        wait_for_spares(pool, 3)
    finally:
        pool.close()
    assert not leftover.exists()


def test_a_refill_that_fails_leaves_the_next_one_to_try_again(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    pool = SparePool(jobs, "trees", build_tree, keep=2)
    pool.dir.parent.mkdir(parents=True)
    pool.dir.write_text("a file where the spares go")  # every refill fails
    try:
        assert not pool.take(jobs / ".new-x")
        pool.replenish()
        deadline = time.monotonic() + 30
        while pool._wanted.is_set():  # the failed refill has begun
            assert time.monotonic() < deadline
            time.sleep(0.05)
        pool.dir.unlink()
        assert not pool.take(jobs / ".new-y")
        pool.replenish()  # asks again: this time it works
        wait_for_spares(pool, 2)
    finally:
        pool.close()


def test_a_pool_without_a_thread_is_topped_up_in_its_owner_s_thread(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    paths = JobPaths(jobs, "job-d")
    paths.create({})
    pool = SparePool(jobs, "attempts", build_attempt_logs, keep=2, background=False)
    leftover = pool.dir / ".making-dead"
    pool.dir.mkdir(parents=True)
    build_attempt_logs(leftover)
    long_ago = time.time() - 3600
    os.utime(leftover, (long_ago, long_ago))
    # Taking starts no thread: nothing competes with the job being started.
    paths.start_attempt_logs(1, pool)
    assert pool._thread is None and ready(pool) == 0
    # The owner tops it up when idle, and a dead maker's leftover goes.
    pool.replenish()
    assert ready(pool) == 2 and not leftover.exists()
    paths.start_attempt_logs(2, pool)
    assert pool._thread is None and ready(pool) == 1
    # A pool that cannot be used is no error for its owner: the work makes its own.
    for name in os.listdir(pool.dir):
        (pool.dir / name / "rank_0.log").unlink()
        (pool.dir / name).rmdir()
    pool.dir.rmdir()
    pool.dir.write_text("a file where the spares go")
    pool.replenish()
    assert paths.start_attempt_logs(3, pool).exists()
    pool.replenish()
    # With nothing taken since, topping up makes nothing.
    pool.dir.unlink()
    pool.replenish()
    assert not pool.dir.exists()


def test_an_attempt_keeps_its_start_and_its_end_replaces_the_name_not_the_file(
    tmp_path: Path,
) -> None:
    paths = JobPaths(tmp_path, "job-a")
    paths.create({"job_id": "job-a"})
    paths.start_attempt_logs(1)
    # Given an attempt that started: its start.json is metadata.json too
    paths.write_start_metadata(1, {"attempt": 1, "end": None})
    start = paths.attempt_start(1)
    assert os.path.samefile(start, paths.metadata)
    inode = start.stat().st_ino
    # When it ends, metadata.json is written whole, as another file
    paths.write_metadata({"attempt": 1, "end": "then"})
    assert json.loads(paths.metadata.read_text()) == {"attempt": 1, "end": "then"}
    # Then its start is kept under its own name, the same file: none was freed
    assert json.loads(start.read_text()) == {"attempt": 1, "end": None}
    assert (start.stat().st_ino, start.stat().st_nlink) == (inode, 1)
    assert start.stat().st_mode & 0o777 == 0o644
    # and the next attempt's start is metadata.json, the first's start left as it was
    paths.start_attempt_logs(2)
    paths.write_start_metadata(2, {"attempt": 2, "end": None})
    assert json.loads(paths.metadata.read_text())["attempt"] == 2
    assert json.loads(start.read_text())["attempt"] == 1
    assert sorted(p.name for p in paths.root.iterdir() if p.name.startswith(".")) == []


def test_files_written_whole_are_readable_by_the_lab(tmp_path: Path) -> None:
    target = tmp_path / "metadata.json"
    write_json_atomic(target, {"a": 1})
    write_json_atomic(target, {"a": 2})  # replaced whole
    assert target.read_text() == '{\n  "a": 2\n}\n'
    assert target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["metadata.json"]


def test_a_file_written_whole_replaces_what_a_dead_writer_left_half_written(
    tmp_path: Path,
) -> None:
    target = tmp_path / "progress.json"
    # A writer of this pid and thread that died mid-write left its temporary file,
    # longer than what comes now and not readable by the lab.
    stale = tmp_path / f".progress.json.{os.getpid()}.{threading.get_ident()}.tmp"
    stale.write_text('{"half": ' + "x" * 500)
    stale.chmod(0o600)
    old = os.umask(0o077)
    try:
        write_json_atomic(target, {"a": 1})
    finally:
        os.umask(old)
    assert json.loads(target.read_text()) == {"a": 1}
    assert target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["progress.json"]
    # One that cannot be replaced (a directory stands there) leaves nothing behind.
    (tmp_path / "metadata.json").mkdir()
    with pytest.raises(IsADirectoryError):
        write_json_atomic(tmp_path / "metadata.json", {"a": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metadata.json", "progress.json"]
