"""Progress tracking: real run directories written by real child processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, ROOT, wait_until
from ugro.progress.base import ProgressInfo, ScanError
from ugro.progress.scan import (
    FAILED,
    FINISHED,
    OUTDATED,
    RUNNING,
    STUCK,
    Scanner,
    decide_status,
    last_change,
)
from ugro.progress.trackers import detect

EXAMPLES = ROOT / "examples"
PY = sys.executable


def _scanner() -> Scanner:
    return Scanner(stuck_after=3600, outdated_after=30 * 86400)


@pytest.mark.timeout(60)
def test_a_trainer_s_progress_moves_epoch_by_epoch_with_scores_and_eta(tmp_path: Path) -> None:
    run = tmp_path / "run"
    trainer = subprocess.Popen(
        [
            PY,
            str(EXAMPLES / "train.py"),
            "--epochs",
            "4",
            "--epoch-seconds",
            "0.4",
            "--out",
            str(run),
        ],
        stdout=subprocess.DEVNULL,
    )
    scanner, seen = _scanner(), []
    try:
        wait_until(lambda: (run / "epoch_0").exists(), 20, "the first epoch")
        while trainer.poll() is None:
            [report] = scanner.scan([run], epochs=4)
            seen.append(report.progress.completed_epochs)
            time.sleep(0.1)
    finally:
        trainer.wait()
    [report] = scanner.scan([run], epochs=4)
    info = report.progress
    assert seen == sorted(seen) and len(set(seen)) >= 3  # it moved, epoch by epoch
    assert info.runner_type == "trainer" and info.completed_epochs == 4
    assert info.percent == 100.0 and info.complete and report.status == FINISHED
    assert info.best_score is not None and info.latest_score is not None
    assert info.best_score >= info.latest_score - 1e-9
    assert info.eta_seconds == 0.0
    # the pace of recent epochs gives an ETA while it runs
    partial = scanner.progress(run, None, 8)
    assert partial.percent == 50.0 and partial.eta_seconds is not None
    assert 0.5 < partial.eta_seconds < 10


@pytest.mark.timeout(60)
def test_an_evaluator_goes_from_0_to_100(tmp_path: Path) -> None:
    run = tmp_path / "eval"
    run.mkdir()
    (run / "metrics.jsonl").write_text("")
    with pytest.raises(ScanError):
        detect(run)  # nothing written yet: no runner type to tell
    from ugro.progress.trackers import tracker_for_kind

    before = tracker_for_kind("eval").read(run, None)
    assert before.percent == 0.0 and not before.complete
    subprocess.run(
        [PY, str(EXAMPLES / "evaluate.py"), "--out", str(run)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    [report] = _scanner().scan([run])
    assert report.progress.runner_type == "evaluator"
    assert report.progress.percent == 100.0 and report.status == FINISHED
    assert report.progress.best_score is not None


def test_early_stop_is_recognised(tmp_path: Path) -> None:
    run = tmp_path / "early"
    run.mkdir()
    lines = [{"step": i, "epoch": i, "val_accuracy": 0.5 + i / 10} for i in range(3)]
    lines.append({"step": 3, "epoch": 2, "early_stop": True})
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    info = _scanner().progress(run, None, 10)
    assert info.early_stopped and info.early_stop_epoch == 2
    assert info.complete and info.percent == 100.0 and info.completed_epochs == 3


def test_an_unrecognisable_directory_fails_naming_what_it_saw(tmp_path: Path) -> None:
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "notes.txt").write_text("hello")
    with pytest.raises(ScanError) as caught:
        detect(odd)
    message = str(caught.value)
    assert str(odd) in message and "notes.txt" in message
    assert "epoch_<n>/" in message and "evaluation_scores.json" in message


def test_corrupt_metrics_and_progress_files_are_warnings_not_failures(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    good = json.dumps({"step": 1, "epoch": 0, "val_accuracy": 0.7})
    (run / "metrics.jsonl").write_text(good + "\n" + '{"step": 2, "epo')  # truncated line
    info = _scanner().progress(run, None, 2)
    assert info.completed_epochs == 1
    assert any("line 2" in warning for warning in info.warnings)
    (run / "progress.json").write_text('{"completed_epochs": ')
    loaded, warning = ProgressInfo.load(run / "progress.json")
    assert loaded is None and warning and "progress.json" in warning


def test_an_older_progress_file_with_four_fields_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "progress.json"
    path.write_text(
        json.dumps(
            {"completed_epochs": 3, "total_epochs": 10, "percent": 30.0, "early_stopped": False}
        )
    )
    loaded, warning = ProgressInfo.load(path)
    assert warning is None and loaded is not None
    assert loaded.completed_epochs == 3 and loaded.best_score is None


@pytest.mark.parametrize(
    ("alive", "complete", "quiet_for", "ended_ago", "expected"),
    [
        (True, False, 10, None, RUNNING),
        (True, False, 5000, None, STUCK),
        (False, True, 10, 10, FINISHED),
        (False, True, 10, 40 * 86400, OUTDATED),
        (False, False, 10, 10, FAILED),
        (None, False, 10, None, RUNNING),
        (None, False, 5000, None, FAILED),
    ],
)
def test_status_decisions(
    alive: bool | None, complete: bool, quiet_for: float, ended_ago: float | None, expected: str
) -> None:
    now = 1_000_000_000.0
    ended = None if ended_ago is None else now - ended_ago
    assert decide_status(alive, complete, now - quiet_for, ended, now, 3600, 30 * 86400) == expected


@pytest.mark.timeout(60)
def test_ugro_scan_reads_a_tree_it_did_not_launch(tmp_path: Path) -> None:
    tree = tmp_path / "experiments"
    for lr in ("0.1", "0.3"):
        subprocess.run(
            [
                PY,
                str(EXAMPLES / "train.py"),
                "--epochs",
                "2",
                "--lr",
                lr,
                "--out",
                str(tree / f"lr{lr}"),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    subprocess.run(
        [PY, str(EXAMPLES / "evaluate.py"), "--out", str(tree / "eval")],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    result = subprocess.run(
        [str(BIN / "ugro"), "scan", str(tree), "--epochs", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    runs = {Path(r["path"]).name: r for r in json.loads(result.stdout)}
    assert set(runs) == {"lr0.1", "lr0.3", "eval"}
    assert (
        runs["eval"]["runner_type"] == "evaluator" and runs["eval"]["progress_percentage"] == 100.0
    )
    for name in ("lr0.1", "lr0.3"):
        assert runs[name]["runner_type"] == "trainer" and runs[name]["status"] == "finished"
        assert runs[name]["completed_epochs"] == 2 and runs[name]["total_epochs"] == 2
    table = subprocess.run(
        [str(BIN / "ugro"), "scan", str(tree), "--epochs", "2"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "lr0.1" in table.stdout and "100%" in table.stdout
    # A folder with run files (logs/) but none a runner type is told by fails the scan
    (tree / "stray" / "logs").mkdir(parents=True)
    (tree / "stray" / "x.bin").write_bytes(b"1")
    bad = subprocess.run(
        [str(BIN / "ugro"), "scan", str(tree)], capture_output=True, text=True, timeout=30
    )
    assert bad.returncode == 2 and "stray" in bad.stderr and "x.bin" in bad.stderr


def test_a_run_s_last_change_is_its_newest_log_metric_or_epoch(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    (run / "epoch_0").mkdir()
    for name in ("metrics.jsonl", "logs/training.log", "config.json"):
        (run / name).write_text("{}\n")
    stamps = {"epoch_0": 1000.0, "metrics.jsonl": 2000.0, "logs/training.log": 1500.0}
    for name, stamp in {**stamps, "config.json": 9000.0}.items():  # config: not activity
        os.utime(run / name, (stamp, stamp))
    scanner = Scanner(stuck_after=3600, outdated_after=86400)
    scanner.progress(run, None, 1)
    assert last_change(run) == scanner.last_change(run, 1) == 2000.0
    # The training log's writes change nothing the signature lists, and still count
    os.utime(run / "logs" / "training.log", (3000.0, 3000.0))
    scanner.progress(run, None, 1)
    assert last_change(run) == scanner.last_change(run, 1) == 3000.0
    # A new epoch is seen through the listing the scanner has just made
    (run / "epoch_1").mkdir()
    os.utime(run / "epoch_1", (4000.0, 4000.0))
    scanner.progress(run, None, 1)
    assert last_change(run) == scanner.last_change(run, 1) == 4000.0
