"""How finished runs, evaluators and runs without a plan read in `ugro list` and
`ugro scan`; which folders a scan of a tree skips; an ETA with no measurable pace."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, ugro
from ugro import Client, JobSpec
from ugro.progress.scan import Scanner
from ugro.progress.trainer import DEFAULT_FILES
from ugro.settings import Settings

PY = sys.executable
EXAMPLES = ROOT / "examples"


def _row(table: str, first_cell: str) -> list[str]:
    """The cells of the table row that starts with ``first_cell``, split on runs of
    two or more spaces (a cell such as the progress bar holds one)."""
    for line in table.splitlines():
        if line.split(maxsplit=1)[:1] == [first_cell]:
            return re.split(r"\s{2,}", line.strip())
    raise AssertionError(f"no row {first_cell!r} in:\n{table}")


@pytest.mark.timeout(120)
def test_finished_jobs_without_a_plan_and_evaluators_show_done(stack: Settings) -> None:
    with Client(stack) as client:
        unplanned = client.submit(
            JobSpec(name="unplanned", command=[PY, str(EXAMPLES / "train.py"), "--epochs", "3"])
        )
        evaluator = client.submit(
            JobSpec(name="evaluator", kind="eval", command=[PY, str(EXAMPLES / "evaluate.py")])
        )
        silent = client.submit(JobSpec(name="silent", command=[PY, "-c", "print('no epochs')"]))
        ended = client.wait([unplanned.id, evaluator.id, silent.id], timeout=90)
        assert all(job.succeeded for job in ended), [job.status for job in ended]

    listed = {job["name"]: job for job in json.loads(ugro(stack, "list", "--json").stdout)}
    trained = listed["unplanned"]["progress"]
    assert trained["complete"] and trained["percent"] == 100.0
    assert trained["completed_epochs"] == 3 and trained["total_epochs"] == 3
    assert listed["unplanned"]["run_status"] == "finished"
    written = json.loads((ended[0].job_dir / "progress.json").read_text())
    assert written["complete"] and written["total_epochs"] == 3  # the file agrees
    assert listed["silent"]["progress"]["complete"]
    assert listed["silent"]["run_status"] == "finished"

    table = ugro(stack, "list").stdout
    row = _row(table, unplanned.id)
    assert "100%" in " ".join(row) and "3/3" in row, row
    assert row[-2] == "-", row  # ETA: a finished run waits for nothing
    row = _row(table, evaluator.id)
    assert "done" in row and "-" in row and not any("/?" in cell for cell in row), row
    row = _row(table, silent.id)
    assert "done" in row and not any("%" in cell or "/?" in cell for cell in row), row


def _synthetic_run(run: Path, epochs: int, planned: int | None = None) -> None:
    """A run whose epochs are all written at once, as a replayed or synthetic one is."""
    for epoch in range(epochs):
        folder = run / f"epoch_{epoch}"
        folder.mkdir(parents=True)
        for name in DEFAULT_FILES:
            (folder / name).write_text(json.dumps({"accuracy": 0.5 + epoch / 100}))
    if planned is not None:
        (run / "config.json").write_text(json.dumps({"spec": {"epochs": planned}}))


def _scan(settings: Settings, *args: str) -> tuple[int, str, str]:
    result = ugro(settings, "scan", *args, timeout=60)
    return result.returncode, result.stdout, result.stderr


@pytest.mark.timeout(60)
def test_scanning_a_tree_skips_folders_with_no_run_files(
    tmp_path: Path, settings: Settings
) -> None:
    tree = tmp_path / "runs"
    _synthetic_run(tree / "a", 2, planned=2)
    (tree / "notes").mkdir()
    (tree / "notes" / "README.md").write_text("what these runs were for\n")

    code, stdout, stderr = _scan(settings, str(tree))
    assert code == 0, stderr
    assert _row(stdout, "a")[2] == "finished" and "notes" not in stdout + stderr

    code, stdout, stderr = _scan(settings, str(tree), "--verbose", "--json")
    assert code == 0, stderr
    assert [Path(r["path"]).name for r in json.loads(stdout)] == ["a"]
    assert "skipped: notes/ (no run files)" in stderr

    # A folder with run files that no runner type explains still fails the scan.
    (tree / "broken" / "logs").mkdir(parents=True)
    (tree / "broken" / "config.json").write_text("{}")
    code, stdout, stderr = _scan(settings, str(tree))
    assert code == 2 and "broken" in stderr and "config.json" in stderr, stderr
    assert _row(stdout, "a")[2] == "finished"  # the runs are still shown

    # A directory holding nothing that looks like a run says so, and fails.
    code, _, stderr = _scan(settings, str(tree / "notes"))
    assert code == 2 and "README.md" in stderr, stderr


@pytest.mark.timeout(60)
def test_a_run_with_no_measurable_pace_has_no_eta(tmp_path: Path, settings: Settings) -> None:
    run = tmp_path / "synthetic"
    _synthetic_run(run, 3, planned=10)
    now = time.time()
    for epoch in range(3):  # written within the same second
        os.utime(run / f"epoch_{epoch}" / DEFAULT_FILES[-1], (now, now + epoch / 1000))
    code, stdout, stderr = _scan(settings, str(run), "--json")
    assert code == 0, stderr
    [report] = json.loads(stdout)
    assert report["status"] == "running" and report["completed_epochs"] == 3
    assert report["eta_seconds"] is None
    code, stdout, _ = _scan(settings, str(run))
    assert _row(stdout, "synthetic")[-1] == "-", stdout
    # Epochs a measurable time apart give one.
    for epoch in range(3):
        stamp = now - 60 * (3 - epoch)
        for name in DEFAULT_FILES:
            os.utime(run / f"epoch_{epoch}" / name, (stamp, stamp))
    info = Scanner(3600, 86400).progress(run, None, 10)
    assert info.eta_seconds == pytest.approx(7 * 60)
