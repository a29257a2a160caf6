"""What `ugro nodes` and `ugro nodes --history` show: each row one reading, so a
GPU's utilisation and whether a job holds it are the same moment, and a node's
totals add up its GPUs' rows."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import redis

from tests.conftest import make_settings, running_stack, ugro, wait_for_job, wait_until
from ugro import Client, JobSpec, JobStatus
from ugro.gpus.fake import FakeBackend
from ugro.health.readings import latest_readings, publish_reading, read_node
from ugro.health.sweep import health_sweep
from ugro.runtime import Runtime
from ugro.settings import Settings

PY = sys.executable


@pytest.fixture
def rt(settings: Settings, live_redis: redis.Redis) -> Iterator[Runtime]:
    runtime = Runtime.open(settings)
    yield runtime
    runtime.close()


def _job_process(jobs_dir: Path, node: str, index: int, job_id: str) -> subprocess.Popen[bytes]:
    """A process the fake backend takes for a ugro job running on GPU ``index``."""
    env = {**os.environ, "UGRO_JOB_ID": job_id, "UGRO_NODE": node}
    env["UGRO_JOB_DIR"] = str(jobs_dir / job_id)
    env["CUDA_VISIBLE_DEVICES"] = str(index)
    return subprocess.Popen([PY, "-c", "import time; time.sleep(60)"], env=env)


@pytest.mark.timeout(30)
def test_a_sample_holds_the_gpu_busy_as_the_agent_read_it_not_the_leases_at_the_sweep(
    rt: Runtime,
) -> None:
    node = rt.settings.node_name
    # (its own jobs only: another test's stack may run jobs on a node of this name)
    backend = FakeBackend(2, None, node, rt.settings.jobs_dir)
    # A job runs on GPU 1 under its lease, as a worker runs one, and the agent reads it.
    assert rt.live.leases.acquire(node, [1], "job-x|t", 30.0)
    job = _job_process(rt.settings.jobs_dir, node, 1, "job-x")
    try:
        reading = read_node(rt, backend)
    finally:
        job.kill()
        job.wait()
    publish_reading(rt, reading)
    # The job ends and its worker lets go of the lease before the agent reads again.
    assert rt.live.leases.release(node, [1], "job-x|t") == 1
    report = health_sweep(rt, force=True)
    assert report is not None
    [idle, ran] = report.nodes[node].gpus
    assert (idle.utilization, idle.busy) == (0.0, False)
    assert ran.utilization is not None and ran.utilization > 0
    assert ran.busy, "the sample shows GPU 1 at work with no job on it"
    assert [gpu["job"] for gpu in reading.gpus] == [None, "job-x"]
    # The reading after the job's end finds the GPU idle and free, together.
    publish_reading(rt, read_node(rt, backend))
    report = health_sweep(rt, force=True)
    assert report is not None
    assert [(g.utilization, g.busy) for g in report.nodes[node].gpus] == [(0.0, False)] * 2


@pytest.fixture
def fast_sweeps(tmp_path: Path, database_url: str) -> Iterator[Settings]:
    """A stack whose sweeps (every 0.3 s) outpace its agent's readings (every 3 s):
    most sweeps score a reading taken a while before."""
    settings = make_settings(
        tmp_path / "data",
        database_url,
        health_collect_interval=3.0,
        health_min_interval=0.3,
        health_max_interval=0.6,
        # Sweeps before the agent's first reading count as failed checks.
        breaker_open_seconds=2.0,
    )
    with running_stack(settings):
        yield settings


def _idle_after(settings: Settings, client: Client, moment: datetime) -> bool:
    """A sample after ``moment`` finds every GPU idle and free."""
    found = client.node_history(moment, settings.node_name)
    return any(s.gpus and all(not g.busy and not g.utilization for g in s.gpus) for s in found)


@pytest.mark.timeout(120)
def test_history_shows_each_gpus_utilisation_and_its_job_from_the_same_moment(
    fast_sweeps: Settings,
) -> None:
    settings = fast_sweeps
    # Four jobs that end 1.5 s apart: whatever the phase of the agent's readings,
    # some end well before the next one, and sweeps come in between.
    durations = [3.5, 5.0, 6.5, 8.0]
    with Client(settings) as client:
        jobs = [
            client.submit(
                JobSpec(name=f"load{i}", command=[PY, "-c", f"import time; time.sleep({d})"])
            )
            for i, d in enumerate(durations)
        ]
        done = client.wait([job.id for job in jobs], timeout=60)
        assert all(job.succeeded for job in done)
        ended = max(job.finished_at for job in done if job.finished_at)
        wait_until(lambda: _idle_after(settings, client, ended), 30, "a sample of the idle GPUs")
    shown = ugro(settings, "nodes", "--history", "5m", "--json")
    assert shown.returncode == 0, shown.stderr
    found = json.loads(shown.stdout)
    odd = [
        f"{sample['at']}: GPU {gpu['index']} at {gpu['utilization']:.0f} % with no job"
        for sample in found
        for gpu in sample["gpus"]
        if gpu["utilization"] and not gpu["busy"]
    ]
    assert not odd, "\n".join(odd)
    # Every job was read at work on its GPU, with its job.
    seen = {gpu["index"] for s in found for gpu in s["gpus"] if gpu["utilization"] and gpu["busy"]}
    assert seen == {job.gpu_indices[0] for job in done}


_GPU_ROW = re.compile(r"^\s*(\S+)\s+(\d+)\s+(free|busy|blocked)\s+\S+\s+(\d+)%\s+(\d+)/(\d+) MiB")
_NODE_ROW = re.compile(r"^\s*(\S+)\s.*?\s(\d+)/(\d+)\s+(\d+)%\s+([\d.]+)/(\d+) GiB")


@pytest.fixture
def rare_sweeps(tmp_path: Path, database_url: str) -> Iterator[Settings]:
    """A stack whose sweeps come a minute apart while its agent reads every second."""
    settings = make_settings(
        tmp_path / "data",
        database_url,
        health_collect_interval=1.0,
        health_min_interval=60.0,
        health_max_interval=60.0,
    )
    with running_stack(settings):
        yield settings


@pytest.mark.timeout(120)
def test_a_nodes_row_adds_up_the_gpu_rows_it_shows(rare_sweeps: Settings) -> None:
    settings = rare_sweeps
    node = settings.node_name
    with Client(settings) as client:
        # A sweep of the idle node, once its agent has read it (else the node
        # would be CRITICAL, and skipped, until the next sweep a minute later).
        wait_until(
            lambda: bool(latest_readings(client.rt, [node])), 30, "the agent's first reading"
        )
        assert ugro(settings, "health").returncode == 0
        job = client.submit(
            JobSpec(name="hold", command=[PY, "-c", "import time; time.sleep(100)"])
        )
        running = wait_for_job(client, job.id, lambda j: j.status is JobStatus.RUNNING, 30)
        [index] = running.gpu_indices
        # Steady numbers for the job's GPU, so two commands in a row read the same.
        control = settings.data_dir / "fake-gpus.json"
        steady = {"utilization": 94.0, "memory_used_mb": 7044.0, "temperature_c": 70.0}
        control.write_text(json.dumps({str(index): steady}))

        def gpu_rows() -> list[tuple[str, int, str, int, int, int]]:
            table = ugro(settings, "nodes", "--gpus").stdout
            found = [_GPU_ROW.match(line) for line in table.splitlines()]
            return [(m[1], int(m[2]), m[3], int(m[4]), int(m[5]), int(m[6])) for m in found if m]

        wait_until(
            lambda: (node, index, "busy", 94, 7044, 24576) in gpu_rows(), 30, "the job's GPU read"
        )
        rows = gpu_rows()
        shown = ugro(settings, "nodes").stdout
        client.cancel(job.id)
    [row] = [m for m in map(_NODE_ROW.match, shown.splitlines()) if m]
    assert len(rows) == 4, rows
    busy = sum(1 for r in rows if r[2] == "busy")
    used = sum(r[4] for r in rows) / 1024
    total = sum(r[5] for r in rows) / 1024
    util = sum(r[3] for r in rows) / len(rows)
    assert (row[1], int(row[2]), int(row[3])) == (node, busy, len(rows)), shown
    assert (row[5], row[6]) == (f"{used:.1f}", f"{total:.0f}"), shown
    assert row[4] == f"{util:.0f}", shown
    assert (busy, row[5]) == (1, "6.9"), shown
