"""The progress plan's format: ``progress.json`` as our users' tools read it, written
by ugro and by outside tools; runner type detection in the plan's order; a run's
own logs as its activity; `ugro scan` over a tree with one run it cannot read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import BIN, ROOT
from ugro.progress.base import ProgressInfo, ScanError
from ugro.progress.scan import RUNNING, STUCK, Scanner, decide_status, last_change
from ugro.progress.trackers import detect

PY = sys.executable
EXAMPLES = ROOT / "examples"

# What an outside tool writes, in the plan's names and types.
_OUTSIDE_TOOL = """
import json, sys
json.dump({
    "completed_epochs": 6, "total_epochs": 10, "progress_percentage": 60.0,
    "early_stopped": False, "early_stopped_at_epoch": None, "runner_type": "trainer",
    "start_time": 1765000000.0, "last_update_time": 1765003600.5,
    "best_score": {"val_loss": 0.31, "accuracy": 0.91},
    "latest_score": {"val_loss": 0.35, "accuracy": 0.89},
    "error_message": None, "warnings": ["slow disk"],
}, open(sys.argv[1], "w"))
"""


@pytest.mark.timeout(30)
def test_a_plan_format_file_from_an_outside_tool_loads_with_its_values(tmp_path: Path) -> None:
    # Given a progress.json an outside tool wrote in the plan's format
    path = tmp_path / "progress.json"
    subprocess.run([PY, "-c", _OUTSIDE_TOOL, str(path)], check=True)
    # When ugro loads it
    info, warning = ProgressInfo.load(path)
    # Then it has the file's values, not 0 %
    assert warning is None and info is not None
    assert info.percent == 60.0 and info.completed_epochs == 6 and info.total_epochs == 10
    assert info.started_at == datetime.fromtimestamp(1765000000.0, UTC)
    assert info.last_update == datetime.fromtimestamp(1765003600.5, UTC)
    assert (info.score_name, info.best_score, info.latest_score) == ("accuracy", 0.91, 0.89)
    assert info.warnings == ["slow disk"] and not info.complete and info.error is None


def test_what_ugro_writes_is_the_plan_s_format_and_reads_back_the_same() -> None:
    # Given a trainer stopped early, with ugro's own fields set
    info = ProgressInfo(
        completed_epochs=4, total_epochs=10, percent=100.0, early_stopped=True,
        early_stop_epoch=3, runner_type="trainer", score_name="f1", best_score=0.8,
        latest_score=0.7, complete=True, eta_seconds=0.0, error="boom", warnings=["w"],
        started_at=datetime(2026, 12, 1, tzinfo=UTC),
        last_update=datetime(2026, 12, 2, 6, 30, tzinfo=UTC),
    )  # fmt: skip
    # When it is written as progress.json holds it
    written = json.loads(json.dumps(info.to_file("finished")))
    # Then the plan's names and types, and ugro's own beside them
    assert written["progress_percentage"] == 100.0 and written["early_stopped_at_epoch"] == 3
    assert written["start_time"] == datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    assert isinstance(written["last_update_time"], float)
    assert written["best_score"] == {"f1": 0.8} and written["latest_score"] == {"f1": 0.7}
    assert written["error_message"] == "boom" and written["status"] == "finished"
    assert written["eta_seconds"] == 0.0 and written["complete"] is True
    assert ProgressInfo.model_validate(written) == info
    # A run with no score writes empty objects, not nulls
    empty = ProgressInfo(runner_type="evaluator").to_file()
    assert empty["best_score"] == {} and empty["latest_score"] == {}
    assert ProgressInfo.model_validate(empty) == ProgressInfo(runner_type="evaluator")


def _run(root: Path, name: str, files: dict[str, object]) -> Path:
    run = root / name
    run.mkdir(parents=True)
    for relative, content in files.items():
        path = run / relative
        if content is None:
            path.mkdir(parents=True)
        else:
            path.write_text(json.dumps(content))
    return run


def test_the_runner_type_is_detected_in_the_plan_s_order(tmp_path: Path) -> None:
    scores = {"accuracy": 0.9}
    # The directory's files first, evaluation scores before epoch_0/
    both = _run(tmp_path, "both", {"evaluation_scores.json": scores, "epoch_0": None})
    assert detect(both).runner_type == "evaluator"
    assert detect(_run(tmp_path, "epochs", {"epoch_0": None})).runner_type == "trainer"
    # Else the config's runner class
    trainer = {"config.json": {"runner": {"class": "lab.runners.ResNetTrainer"}}}
    assert detect(_run(tmp_path, "cls_t", trainer)).runner_type == "trainer"
    evaluator = {"config.json": {"runner": {"class": "lab.BleuEvaluator"}, "epochs": 3}}
    assert detect(_run(tmp_path, "cls_e", evaluator)).runner_type == "evaluator"
    # Else an epochs key: a trainer that has not finished an epoch yet, at 0 %
    planned = _run(tmp_path, "planned", {"config.json": {"epochs": 20}})
    assert detect(planned).runner_type == "trainer"
    [report] = Scanner(3600, 86400).scan([planned])
    assert report.progress.total_epochs == 20 and report.progress.percent == 0.0
    # Only then a failure, naming what was seen and what was expected
    odd = _run(tmp_path, "odd", {"config.json": {"runner": {"class": "lab.Exporter"}}})
    with pytest.raises(ScanError) as caught:
        detect(odd)
    message = str(caught.value)
    assert str(odd) in message and "config.json" in message and "'lab.Exporter'" in message
    assert "epoch_<n>/" in message and "evaluation_scores.json" in message
    assert "runner.class" in message and "Trainer" in message and "epochs" in message


def test_a_run_s_own_logs_are_its_activity(tmp_path: Path) -> None:
    # Given a trainer whose epoch was written long ago
    run = _run(tmp_path, "run", {"epoch_0": None, "config.json": {"epochs": 5}})
    os.utime(run / "epoch_0", (1000.0, 1000.0))
    scanner = Scanner(stuck_after=3600, outdated_after=86400)
    scanner.progress(run, None, None)
    assert scanner.last_change(run, None) == 1000.0
    assert decide_status(True, False, 1000.0, None, 9000.0, 3600, 86400) == STUCK
    # When its train_val log and then an eval log are written to
    for name, stamp in (("train_val_rank0.log", 8000.0), ("eval_test.log", 8500.0)):
        (run / name).write_text("step\n")
        os.utime(run / name, (stamp, stamp))
        scanner.progress(run, None, None)
        # Then that change is the run's last activity: running, not stuck
        assert last_change(run) == scanner.last_change(run, None) == stamp
    assert decide_status(True, False, 8500.0, None, 9000.0, 3600, 86400) == RUNNING
    # Another log is not a run's log
    (run / "other.log").write_text("x")
    os.utime(run / "other.log", (8900.0, 8900.0))
    assert last_change(run) == 8500.0


@pytest.mark.timeout(60)
def test_a_scan_with_one_unreadable_run_shows_every_other_and_exits_2(tmp_path: Path) -> None:
    # Given a tree of two runs and one whose runner type cannot be told
    tree = tmp_path / "tree"
    subprocess.run(
        [PY, str(EXAMPLES / "train.py"), "--epochs", "2", "--out", str(tree / "trained")],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    _run(tree, "planned", {"config.json": {"runner": {"class": "x.Trainer"}, "epochs": 4}})
    _run(tree, "stray", {"config.json": {"name": "notes"}})
    # When it is scanned, as a table and as JSON
    table = subprocess.run(
        [str(BIN / "ugro"), "scan", str(tree)], capture_output=True, text=True, timeout=30
    )
    as_json = subprocess.run(
        [str(BIN / "ugro"), "scan", str(tree), "--json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    # Then every run is shown, the unreadable one marked with its error, and the
    # exit code says a run could not be read
    assert table.returncode == 2 and as_json.returncode == 2
    rows = {line.split()[0]: line.split() for line in table.stdout.splitlines()[1:] if line}
    assert set(rows) == {"planned", "stray", "trained"}, table.stdout
    assert rows["stray"][1:3] == ["?", "failed"]
    assert "0/4" in rows["planned"] and rows["trained"][1] == "trainer"
    assert "stray" in table.stderr and "no runner type recognised" in table.stderr
    runs = {Path(run["path"]).name: run for run in json.loads(as_json.stdout)}
    assert "no runner type recognised" in runs["stray"]["error_message"]
    assert runs["planned"]["progress_percentage"] == 0.0 and runs["planned"]["total_epochs"] == 4
    assert runs["trained"]["completed_epochs"] == 2 and runs["trained"]["error_message"] is None
