"""`ugro demo` (what `make demo` runs) from start to finish."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN, ROOT, processes_of
from ugro.settings import Settings


@pytest.mark.timeout(240)
def test_the_demo_runs_a_sweep_and_leaves_results_and_no_process(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    result = subprocess.run(
        [str(BIN / "ugro"), "demo", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=220,
        cwd=ROOT,
        env={"PATH": str(BIN) + ":/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ugro demo: results" in result.stdout
    assert result.stdout.count("finished") == 9
    # (.spare holds empty trees made ahead of time for the next submissions)
    jobs = sorted(p for p in (data / "jobs").iterdir() if not p.name.startswith("."))
    assert len(jobs) == 9
    trainers = [job for job in jobs if job.name.startswith("train-")]
    assert len(trainers) == 6
    for job in trainers:
        assert len(list(job.glob("epoch_*/validation_scores.json"))) == 8
        assert len((job / "metrics.jsonl").read_text().splitlines()) == 8
    for job in jobs:
        if job.name.startswith("eval-"):
            scores = json.loads((job / "evaluation_scores.json").read_text())
            assert 0.5 < scores["accuracy"] <= 1.0
    assert processes_of(Settings(data_dir=data)) == []
