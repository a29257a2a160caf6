"""A job runs once per attempt: a duplicate message runs nothing, and a stopped
stack puts its running jobs back in the queue instead of losing them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, drop_keys, processes_of, ugro, wait_for_job
from ugro import Client, JobSpec, JobStatus
from ugro.registry import Registry
from ugro.runtime import queue_for_gpu
from ugro.settings import Settings

RECORD = str(ROOT / "tests" / "jobs" / "record.py")


def _wait_for_status(client: Client, job_id: str, status: JobStatus, timeout: float) -> None:
    wait_for_job(client, job_id, lambda job: job.status is status, timeout)


@pytest.mark.timeout(120)
def test_a_duplicate_delivery_to_another_worker_runs_nothing(
    stack: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "runs.jsonl"
    with Client(stack) as client:
        job = client.submit(JobSpec(name="once", command=[sys.executable, RECORD, str(out), "2"]))
        _wait_for_status(client, job.id, JobStatus.RUNNING, timeout=30)
        job = client.get(job.id)
        holders = client.rt.live.leases.lease_holders(job.node or "", job.gpu_indices)
        holder = holders[job.gpu_indices[0]]
        assert holder is not None
        _, token = holder.split("|")
        # The same message again, to an idle GPU's worker, as a redelivery would
        idle = next(i for i in range(4) if i not in job.gpu_indices)
        client.rt.app.send_task(
            "ugro.run_job",
            kwargs={"job_id": job.id, "token": token, "node": job.node, "gpus": job.gpu_indices},
            queue=queue_for_gpu(stack, job.node or "", idle),
        )
        [job] = client.wait(job.id, timeout=60)
    assert job.status is JobStatus.FINISHED and job.attempt == 1
    assert len(out.read_text().splitlines()) == 1
    log = (stack.run_dir / f"gpu-{idle}.log").read_text()
    assert "duplicate delivery" in log


@pytest.mark.timeout(180)
def test_down_requeues_a_running_job_and_up_runs_it_again(
    settings: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "runs.jsonl"
    assert ugro(settings, "up").returncode == 0
    try:
        with Client(settings) as client:
            job = client.submit(
                JobSpec(name="long", command=[sys.executable, RECORD, str(out), "600"])
            )
            _wait_for_status(client, job.id, JobStatus.RUNNING, timeout=30)
        assert ugro(settings, "down").returncode == 0
        assert processes_of(settings) == []  # the job's process is gone too
        registry = Registry(settings.effective_database_url)
        assert registry.get_job(job.id).status == "queued"
        registry.close()
        assert ugro(settings, "up").returncode == 0
        with Client(settings) as client:
            _wait_for_status(client, job.id, JobStatus.RUNNING, timeout=30)
            assert client.get(job.id).attempt == 2
            console = (client.get(job.id).job_dir / "console.log").read_text()
        assert "attempt 1 ended: interrupted" in console
    finally:
        assert ugro(settings, "down").returncode == 0
        drop_keys(settings)
        assert processes_of(settings) == []
