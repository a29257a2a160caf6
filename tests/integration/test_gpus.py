"""The fake GPU backend against real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import wait_until
from ugro.gpus.inventory import load_backend


def test_a_fake_gpu_reads_its_job_as_it_is_at_each_reading(tmp_path: Path) -> None:
    backend = load_backend("fake:2", tmp_path, node="n")
    env = {**os.environ, "UGRO_JOB_ID": "job-1", "UGRO_NODE": "n", "CUDA_VISIBLE_DEVICES": "1"}
    job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    try:
        wait_until(lambda: backend.devices()[1].processes == (job.pid,), 10, "the job's process")
        assert backend.devices()[1].utilization > 0
    finally:
        job.kill()
        job.wait()
    # At once, not a moment later: a reading is of its moment, as NVML's is.
    ended = backend.devices()[1]
    assert (ended.processes, ended.utilization, ended.memory_used_mb) == ((), 0.0, 0.0)


def test_a_fake_gpu_sees_only_its_own_installations_jobs(tmp_path: Path) -> None:
    # Given two simulated clusters on one machine, each with a node named "n"
    ours = load_backend("fake:1", tmp_path, node="n", jobs_dir=tmp_path / "ours")
    theirs = load_backend("fake:1", tmp_path, node="n", jobs_dir=tmp_path / "theirs")
    env = {
        **os.environ,
        "UGRO_JOB_ID": "job-1",
        "UGRO_NODE": "n",
        "CUDA_VISIBLE_DEVICES": "0",
        "UGRO_JOB_DIR": str(tmp_path / "ours" / "job-1"),
    }
    # When a job of ours runs on GPU 0
    job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    try:
        wait_until(lambda: ours.devices()[0].processes == (job.pid,), 10, "the job's process")
        # Then the other cluster's GPU 0 is idle
        assert theirs.devices()[0].processes == ()
    finally:
        job.kill()
        job.wait()
