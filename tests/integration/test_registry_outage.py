"""The registry away: its PostgreSQL server stopped for 20 s while jobs start and end.

A server of the test's own (tests/postgres.py): the shared one is never stopped.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import (
    make_settings,
    processes_of,
    running_stack,
    ugro,
    wait_for_job,
    wait_until,
)
from tests.postgres import PG_BIN, PrivatePostgres, private_postgres
from ugro import Client, JobSpec, JobStatus
from ugro.settings import Settings

pytestmark = pytest.mark.skipif(PG_BIN is None, reason="no PostgreSQL server installed")

OUTAGE = 20.0
# Runs until its folder has a file `go`; each start of its process a line in `starts`.
UNTIL_GO = (
    'echo "$UGRO_ATTEMPT" >> "$UGRO_JOB_DIR/starts"; '
    'while [ ! -e "$UGRO_JOB_DIR/go" ]; do sleep 0.1; done'
)


def _gpu_worker(settings: Settings, index: int) -> psutil.Process:
    [worker] = [
        proc
        for proc in processes_of(settings)
        if "workers.gpu" in proc.cmdline() and proc.cmdline()[-1] == str(index)
    ]
    return worker


@contextlib.contextmanager
def _paused(proc: psutil.Process) -> Iterator[None]:
    """A worker frozen (SIGSTOP) until the block ends: its queue fills meanwhile."""
    proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGCONT)


def _job_processes(job_id: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["environ"]):
        with contextlib.suppress(psutil.Error):
            if (proc.info["environ"] or {}).get("UGRO_JOB_ID") == job_id:
                found.append(proc)
    return found


@pytest.mark.timeout(240)
def test_jobs_start_and_end_through_a_registry_outage_and_submits_fail_fast(
    tmp_path: Path,
) -> None:
    with private_postgres() as server:
        settings = make_settings(tmp_path / "data", server.url, gpu_backend="fake:2")
        with running_stack(settings), Client(settings) as client:
            _through_an_outage(server, settings, client)


def _through_an_outage(server: PrivatePostgres, settings: Settings, client: Client) -> None:
    spec = JobSpec(name="outage", gpus=1, shell=True, command=[UNTIL_GO])
    ending = client.submit(spec)
    ending = wait_for_job(client, ending.id, lambda j: j.status is JobStatus.RUNNING, 60)
    [free] = {0, 1} - set(ending.gpu_indices)
    # Given a job running and another placed on a worker that has not claimed it
    # yet (frozen a moment),
    with _paused(_gpu_worker(settings, free)):
        starting = client.submit(spec)
        wait_for_job(client, starting.id, lambda j: j.status is JobStatus.PLACED, 30)
        # when the registry's server stops
        server.stop()
        stopped = time.monotonic()
    jobs_before = sorted(p.name for p in settings.jobs_dir.iterdir())

    # then a submit fails at once, exit 3, naming the registry, and creates nothing
    submit = ugro(settings, "submit", "--name", "refused", "--", "true", timeout=30)
    assert submit.returncode == 3, submit.stdout + submit.stderr
    assert "registry" in submit.stderr and "does not answer" in submit.stderr, submit.stderr
    assert sorted(p.name for p in settings.jobs_dir.iterdir()) == jobs_before

    # while the running job ends and the placed one's worker claims it: both wait,
    # their leases kept, nothing in Redis marked otherwise.
    (client.rt.paths(ending.id).root / "go").touch()
    wait_until(lambda: not _job_processes(ending.id), 30, "the ending job's process gone")
    process_ended = time.time()
    live = client.rt.live
    while (left := OUTAGE - (time.monotonic() - stopped)) > 0:
        # (the outage lasts its 20 s, whatever the workers do: checked as it goes)
        assert live.job(ending.id)["status"] == JobStatus.RUNNING.value
        assert live.leases.holds_lease(ending.id, ending.node or "", ending.gpu_indices), (
            "lease let go"
        )
        time.sleep(min(left, 0.5))
    server.start()

    # When the registry is back, the end is recorded as it happened, and the claim
    # taken: each job ran once and finished.
    done = wait_for_job(client, ending.id, lambda j: j.done, 60)
    assert done.status is JobStatus.FINISHED, done
    [attempt] = client.rt.registry.attempts(ending.id)
    assert attempt.exit_reason == "ok"
    assert attempt.ended_at is not None
    assert abs(attempt.ended_at.timestamp() - process_ended) < 5, (attempt, process_ended)
    running = wait_for_job(client, starting.id, lambda j: j.status is JobStatus.RUNNING, 60)
    (client.rt.paths(starting.id).root / "go").touch()
    started = wait_for_job(client, starting.id, lambda j: j.done, 60)
    assert started.status is JobStatus.FINISHED and running.attempt == 1, started
    for job in (ending, starting):
        starts = (client.rt.paths(job.id).root / "starts").read_text().split()
        assert starts == ["1"], (job.id, starts)
        assert client.get(job.id).attempt == 1
    assert {job.id for job in client.list()} == {ending.id, starting.id}
    worker_logs = "".join(p.read_text() for p in settings.run_dir.glob("*.log"))
    for waited in (f"the end of job {ending.id}", f"the claim of job {starting.id}"):
        assert f"{waited} attempt" in worker_logs or f"{waited} waits" in worker_logs, waited
