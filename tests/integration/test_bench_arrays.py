"""The arrays bench (bench/arrays.py) in a small form: it runs its two stacks,
reports every figure and exits 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--tasks", "200", "--rounds", "1", "--starts", "5", "--passes", "20"]


@pytest.mark.timeout(120)
def test_the_arrays_bench_reports_the_submit_and_the_next_start_with_few_and_many_waiting() -> None:
    # Given this shell's environment with no ugro setting (the bench makes its own)
    env = {k: v for k, v in os.environ.items() if not k.startswith("UGRO_")}
    # When the bench runs on arrays of 200 tasks, one round
    done = subprocess.run(
        [sys.executable, "-m", "bench.arrays", *SMALL, "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
    )
    # Then it exits 0 with its report
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["tasks"] == 200
    assert report["waiting"] == {"few": [10, 14], "many": [195, 199]}
    for mode in ("uncapped", "capped"):
        submit = report["submit_s"][mode]
        assert len(submit["runs"]) == 1 and submit["median"] > 0
        assert isinstance(submit["met"], bool)
        # with both queue lengths measured, as many samples each
        for key, samples in (("next_start_ms", 5), ("pass_ms", 20)):
            row = report[key][mode]
            assert row["samples"] == samples
            assert row["few"]["p50"] > 0 and row["many"]["p50"] > 0
            assert row["ratio_p50"] == pytest.approx(row["many"]["p50"] / row["few"]["p50"])
