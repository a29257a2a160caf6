"""Never lose a run, never run it twice: dead workers, a wiped or restarted Redis,
an unreachable Redis, and two nodes sharing one Redis, registry and data dir."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import (
    BIN,
    ROOT,
    env_for,
    make_settings,
    processes_of,
    running_stack,
    ugro,
    wait_for_job,
    wait_until,
)
from ugro import Client, JobSpec, JobStatus
from ugro.job import Job
from ugro.ops.redis_server import EmbeddedRedis
from ugro.registry.store import Registry
from ugro.settings import Settings

JOBS = ROOT / "tests" / "jobs"
RECORD = str(JOBS / "record.py")
PY = sys.executable
# Fast liveness: a dead worker's job is lost within lease_ttl (2) + suspect window
# (2) + reconcile tick (1) seconds, give or take a heartbeat.
FAST = {"lease_ttl": 2.0, "reconcile_interval": 1.0, "orphan_scan_interval": 1.0, "worker_ttl": 2.0}


def _wait_file(path: Path, lines: int, timeout: float) -> list[str]:
    wait_until(
        lambda: path.exists() and len(path.read_text().splitlines()) >= lines,
        timeout,
        f"{lines} lines in {path}",
    )
    return path.read_text().splitlines()


def _worker_pid(client: Client, node: str, index: int) -> int:
    [worker] = [w for w in client.rt.live.workers(60) if (w.node, w.index) == (node, index)]
    return worker.pid


@pytest.mark.timeout(120)
def test_a_killed_worker_s_job_is_lost_its_process_killed_and_requeued_once(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(tmp_path / "data", database_url, **FAST)
    out = tmp_path / "attempts.jsonl"
    with running_stack(settings), Client(settings) as client:
        job = client.submit(
            JobSpec(
                name="victim", max_retries=1, command=[PY, str(JOBS / "flaky.py"), str(out), "600"]
            )
        )
        running = wait_for_job(client, job.id, lambda j: j.status is JobStatus.RUNNING, 30)
        first = json.loads(_wait_file(out, 1, 30)[0])
        killed_at = time.monotonic()
        os.kill(_worker_pid(client, "testnode", running.gpu_indices[0]), signal.SIGKILL)

        done = wait_for_job(client, job.id, lambda j: j.done, 60)
        assert done.status is JobStatus.FINISHED and done.attempt == 2
        # the orphaned attempt-1 process did not keep running unseen
        _wait_gone(first["pid"], 10)
        assert time.monotonic() - killed_at < 30
        kinds = [event.kind for event in client.rt.registry.events(job.id)]
        assert kinds.count("job_lost") == 1 and kinds.count("requeued") == 1
        attempts = client.rt.registry.attempts(job.id)
        assert [a.exit_reason for a in attempts] == ["lost", "ok"]
        console = (done.job_dir / "console.log").read_text()
        assert "attempt 1 lost" in console


@pytest.mark.timeout(120)
def test_a_crashed_worker_s_supervisor_declares_its_attempt_lost_within_seconds(
    tmp_path: Path, database_url: str
) -> None:
    # Leases and reconcile as slow as a lab's defaults: their path would take a minute
    slow = {"lease_ttl": 30.0, "reconcile_interval": 15.0, "orphan_scan_interval": 10.0}
    settings = make_settings(tmp_path / "data", database_url, **slow)
    out = tmp_path / "attempts.jsonl"
    with running_stack(settings), Client(settings) as client:
        job = client.submit(
            JobSpec(
                name="crash", max_retries=1, command=[PY, str(JOBS / "flaky.py"), str(out), "600"]
            )
        )
        running = wait_for_job(client, job.id, lambda j: j.status is JobStatus.RUNNING, 30)
        first = json.loads(_wait_file(out, 1, 30)[0])
        # When its GPU worker is killed on a healthy node
        killed_at = time.monotonic()
        os.kill(_worker_pid(client, "testnode", running.gpu_indices[0]), signal.SIGKILL)
        # Then its supervisor declares the attempt lost within seconds, its process
        # stopped, and the job runs again
        wait_until(
            lambda: "job_lost" in [e.kind for e in client.rt.registry.events(job.id)],
            10,
            "the attempt declared lost",
        )
        assert time.monotonic() - killed_at < 5
        _wait_gone(first["pid"], 5)
        done = wait_for_job(client, job.id, lambda j: j.done, 60)
        assert done.status is JobStatus.FINISHED and done.attempt == 2
        [lost] = [e for e in client.rt.registry.events(job.id) if e.kind == "job_lost"]
        assert f"its GPU worker on testnode (GPU {running.gpu_indices[0]}) died" in lost.message


@pytest.mark.timeout(120)
def test_a_job_whose_worker_dies_on_every_attempt_fails_after_its_retries(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(tmp_path / "data", database_url, **FAST)
    pids = tmp_path / "pids"
    with running_stack(settings), Client(settings) as client:
        job = client.submit(
            JobSpec(
                name="cursed", max_retries=1, command=[PY, str(JOBS / "kill_worker.py"), str(pids)]
            )
        )
        done = wait_for_job(client, job.id, lambda j: j.done, 90)
        assert done.status is JobStatus.FAILED and done.exit_reason == "lost"
        assert done.attempt == 2
        assert [a.exit_reason for a in client.rt.registry.attempts(job.id)] == ["lost", "lost"]
        meta = json.loads((done.job_dir / "metadata.json").read_text())
        assert meta["exit_reason"] == "lost" and meta["attempt"] == 2
        for pid in map(int, pids.read_text().split()):
            _wait_gone(pid, 15)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pid: int, timeout: float) -> None:
    wait_until(lambda: _gone(pid), timeout, f"pid {pid} to end")


def _queued_and_running(client: Client, out: Path) -> list[Job]:
    """4 running jobs and 4 queued behind them."""
    jobs = [
        client.submit(JobSpec(name=f"j{i}", command=[PY, RECORD, str(out), "3"])) for i in range(8)
    ]
    for job in jobs[:4]:
        wait_for_job(client, job.id, lambda j: j.status is JobStatus.RUNNING, 30)
    assert all(client.get(job.id).status is JobStatus.QUEUED for job in jobs[4:])
    return jobs


def _all_ran_once(client: Client, jobs: list[Job], out: Path) -> None:
    done = [wait_for_job(client, job.id, lambda j: j.done, 90) for job in jobs]
    assert all(job.status is JobStatus.FINISHED for job in done), [j.status for j in done]
    ran = [json.loads(line)["job_id"] for line in out.read_text().splitlines()]
    assert sorted(ran) == sorted(job.id for job in jobs)


def _wipe(settings: Settings, how: str) -> None:
    server = EmbeddedRedis(settings)
    if how == "flushall":
        server.client().flushall()
        return
    server.stop()  # then start again with nothing kept
    for path in sorted(settings.redis_dir.glob("appendonly*"), reverse=True):
        if path.is_dir():
            for inner in path.iterdir():
                inner.unlink()
            path.rmdir()
        else:
            path.unlink()
    server.start()


@pytest.mark.timeout(150)
@pytest.mark.parametrize("how", ["flushall", "restart"])
def test_after_redis_is_wiped_queued_jobs_run_and_running_ones_are_found(
    tmp_path: Path, database_url: str, how: str
) -> None:
    # The stack's own embedded Redis: this test wipes it.
    settings = make_settings(
        tmp_path / "data", database_url, redis_url=None, redis_prefix="ugro", **FAST
    )
    out = tmp_path / "runs.jsonl"
    with running_stack(settings), Client(settings) as client:
        jobs = _queued_and_running(client, out)
        _wipe(settings, how)
        _all_ran_once(client, jobs, out)
        assert all(j.attempt == 1 for j in client.get_many([j.id for j in jobs]))


def test_an_unreachable_redis_fails_submit_fast_and_creates_nothing(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(tmp_path / "data", database_url, redis_url="redis://127.0.0.1:9/0")
    started = time.monotonic()
    result = ugro(settings, "submit", "--name", "nowhere", "--", "true")
    assert result.returncode == 3
    assert "cannot reach" in result.stderr
    assert time.monotonic() - started < 15
    assert not settings.jobs_dir.exists() or not any(settings.jobs_dir.iterdir())
    if (
        settings.effective_database_url.startswith("sqlite")
        and not (settings.data_dir / "registry.sqlite3").exists()
    ):
        return
    registry = Registry(settings.effective_database_url)
    assert registry.list_jobs() == []
    registry.close()


@pytest.mark.timeout(180)
def test_two_nodes_share_the_work_and_one_stopping_leaves_the_other_running(
    tmp_path: Path, database_url: str
) -> None:
    node_a = make_settings(
        tmp_path / "data", database_url, node_name="a", gpu_backend="fake:2", **FAST
    )
    node_b = node_a.model_copy(update={"node_name": "b"})
    out = tmp_path / "runs.jsonl"
    with running_stack(node_a), Client(node_a) as client:
        worker_b = subprocess.Popen(
            [str(BIN / "ugro"), "worker"],
            env=env_for(node_b),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            _wait_until_nodes(client, {"a", "b"})
            spread = [
                client.submit(JobSpec(name=f"s{i}", command=[PY, RECORD, str(out), "1"]))
                for i in range(4)
            ]
            pinned = client.submit(
                JobSpec(name="pinned", node="b", command=[PY, RECORD, str(out), "0.1"])
            )
            pair = client.submit(
                JobSpec(name="pair", gpus=2, command=[PY, RECORD, str(out), "0.1"])
            )
            done = client.wait([j.id for j in [*spread, pinned, pair]], timeout=60)
            assert all(job.succeeded for job in done)
            assert {job.node for job in done[:4]} == {"a", "b"}
            assert done[4].node == "b"
            assert len(done[5].gpu_indices) == 2  # both on one node: one node, no straddle
            # node b stops while both nodes run jobs: a's job goes on
            long_a = client.submit(
                JobSpec(name="on-a", node="a", command=[PY, RECORD, str(out), "4"])
            )
            long_b = client.submit(
                JobSpec(name="on-b", node="b", command=[PY, RECORD, str(out), "60"])
            )
            for job in (long_a, long_b):
                wait_for_job(client, job.id, lambda j: j.status is JobStatus.RUNNING, 30)
            worker_b.send_signal(signal.SIGTERM)
            assert worker_b.wait(timeout=60) == 0
            [on_a] = client.wait(long_a.id, timeout=30)
            assert on_a.succeeded and on_a.node == "a"
            assert client.get(long_b.id).status is JobStatus.QUEUED  # back in the queue
        finally:
            if worker_b.poll() is None:
                worker_b.kill()
        # b's GPU workers are gone (its health stays listed until a sweep ages it out)
        assert [n["node"] for n in client.nodes() if n["gpus"]] == ["a"]
    assert processes_of(node_b) == []


def _wait_until_nodes(client: Client, names: set[str]) -> None:
    wait_until(lambda: {n["node"] for n in client.nodes()} == names, 60, f"nodes {names}")
