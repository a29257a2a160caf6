"""The results tree: a job's folder has the names of any run's folder, trees and
attempt folders made ahead of time are the same as those made on the spot, no two
takers get the same one, and what ugro writes into a tree the lab can read."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from ugro.errors import SpecError
from ugro.jobs.paths import (
    RUN_FILES,
    JobPaths,
    RunPaths,
    write_json_atomic,
)

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


def test_a_job_tree_appears_whole_with_its_config(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    paths = JobPaths(jobs, "job-a")
    paths.create({"job_id": "job-a"})
    assert sorted(p.name for p in paths.root.iterdir()) == [
        "checkpoints",
        "config.json",
        "console.log",
        "logs",
        "metrics.jsonl",
        "tensorboard",
    ]
    assert json.loads(paths.config.read_text()) == {"job_id": "job-a"}
    assert (paths.root.stat().st_mode & 0o777) == 0o755
    assert [p.name for p in jobs.iterdir()] == ["job-a"]  # no staging name left
    log = paths.start_attempt_logs(1)
    assert log == paths.logs / "attempt_1" / "rank_0.log" and log.read_bytes() == b""


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
