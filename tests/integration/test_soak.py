"""The soak (bench/soak.py) in its short form: a minute of jobs and faults on three
hosts, then the drain and every check of README's "Reliability"."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.soak import FAULTS, soak


@pytest.mark.timeout(400)
def test_a_minute_of_jobs_and_faults_ends_every_job_once_and_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    # Given three hosts of four GPUs under a minute of 1-8 s jobs, gang jobs among
    # them, with workers killed, cables pulled and Redis restarted meanwhile
    report = soak(seconds=60, seed=26, drain_bound=120, where=tmp_path)
    # Then faults of every kind were injected
    assert all(report["faults"][kind] >= 1 for kind in FAULTS), report["faults"]
    assert report["jobs"] >= 20 and report["gang_jobs"] >= 1, report
    # and every check held: each job ended, within its retries, each attempt ran
    # once, no GPU ran two jobs at once, no process was left, the registry and the
    # tree agree
    failed = [c for c in report["checks"] if not c["passed"]]
    assert not failed, (failed, report["timeline"], report["logs"])
