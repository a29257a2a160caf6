"""The control plane bench (bench/control_plane.py, W6) in a small form: it builds
its two simulated clusters, reports every figure and exits 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--nodes", "4", "--gpus-per-node", "2", "--queued", "200", "--registries", "sqlite"]


@pytest.mark.timeout(60)
def test_the_control_plane_bench_times_passes_placements_and_submits() -> None:
    # Given this shell's environment with no ugro setting (the bench makes its own)
    env = {k: v for k, v in os.environ.items() if not k.startswith("UGRO_")}
    # When the bench runs on 4 nodes of 2 GPUs with 200 jobs queued, on SQLite
    done = subprocess.run(
        [sys.executable, "-m", "bench.control_plane", *SMALL, "--samples", "5", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
    )
    # Then it exits 0 with its report
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["nodes"], report["gpus_per_node"], report["gpus"]) == (4, 2, 8)
    [level] = report["registries"]["sqlite"]["levels"]
    assert level["queued"] == 200
    low, high = level["queued_range"]
    assert 150 <= low <= high <= 200
    # with every timing sampled
    for key in ("idle_pass_ms", "placing_pass_ms", "end_ms"):
        assert level[key]["samples"] == 5 and level[key]["p50"] > 0
    for label in ("empty", "queued"):
        assert level["submit_ms"][label]["samples"] == 5
    submit = level["submit_ms"]
    assert submit["ratio_p50"] == pytest.approx(submit["queued"]["p50"] / submit["empty"]["p50"])
    # and the passes placing jobs on what the ends freed
    assert level["placing_pass_ms"]["placed_mean"] > 0
    outcomes = level["freed_to_placed_ms"]["outcomes"]
    assert sum(outcomes.values()) == 5
    assert level["freed_to_placed_ms"]["samples"] == outcomes["claimed"] + outcomes["sent"] > 0
    # and the targets judged at the largest queue
    target = report["targets"]["sqlite"]
    assert target["queued"] == 200
    assert isinstance(target["pass_met"], bool) and isinstance(target["submit_met"], bool)
