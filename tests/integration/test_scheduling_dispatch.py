"""A job runs once per attempt: a duplicate message runs nothing, and a stopped
stack puts its running jobs back in the queue instead of losing them."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest
import redis
from sqlalchemy import inspect, text

from tests.conftest import ROOT, drop_keys, processes_of, ugro, wait_for_job, wait_until
from ugro import Client, JobSpec, JobStatus
from ugro.errors import JobNotFound
from ugro.execution.attempt import run_attempt
from ugro.execution.reconcile import declare_lost
from ugro.jobs.spec import new_job_id
from ugro.registry.models import utcnow
from ugro.registry.store import Registry
from ugro.runtime import Runtime, claim_values
from ugro.scheduling.dispatch import WorkerGpu, dispatch_pending
from ugro.settings import Settings
from ugro.transport.queues import queue_for_gpu

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


@pytest.mark.timeout(120)
def test_a_submit_whose_live_record_cannot_be_written_leaves_nothing_and_sends_no_message(
    stack: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Redis MULTI runs the commands after one that fails: the job's message would
    # reach its worker, whose claim could find the row before the submit removed it.
    out = tmp_path / "runs.jsonl"
    job_id = "half-0badf00d"
    monkeypatch.setattr(
        "ugro.scheduling.submit.new_job_id",
        lambda name: job_id if name == "half" else new_job_id(name),
    )
    with Client(stack) as client:
        # Twice: the first submit leases and then writes the live record with the
        # message; the next, planned on what the first saw, does both in one script
        for _ in range(2):
            client.rt.live.redis.set(client.rt.keys.job(job_id), "not a hash")
            with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
                client.submit(JobSpec(name="half", command=[sys.executable, RECORD, str(out), "0"]))
        with pytest.raises(JobNotFound):
            client.get(job_id)
        assert client.rt.live.job(job_id) == {}
        assert not client.rt.live.queued_ids()
        assert not (stack.jobs_dir / job_id).exists()
        gpus = list(range(4))
        assert set(client.rt.live.leases.lease_holders(stack.node_name, gpus).values()) == {None}
        # The GPUs are free for the next jobs, which run; no worker heard of the first
        after = [client.submit(JobSpec(name="after", command=["sleep", "1"])) for _ in gpus]
        done = client.wait([job.id for job in after], timeout=60)
        assert {job.status for job in done} == {JobStatus.FINISHED}
        assert sorted(index for job in done for index in job.gpu_indices) == gpus
    logs = "".join((stack.run_dir / f"gpu-{i}.log").read_text() for i in gpus)
    assert job_id not in logs
    assert not out.exists()


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


def _placed(rt: Runtime, job_id: str, token: str, command: list[str], max_retries: int = 0) -> None:
    """A job's registry row and tree as a placement on GPU 0 of node "n" left them."""
    spec = JobSpec(name=job_id, command=command, max_retries=max_retries)
    rt.registry.create_jobs(
        [
            {
                "id": job_id, "name": job_id, "kind": "command", "status": "placed",
                "priority": 0, "gpus": 1, "node": "n", "gpu_indices": "[0]", "attempt": 0,
                "max_retries": max_retries, "spec": spec.model_dump_json(), "created_at": utcnow(),
                "placement_token": token,
            }
        ]
    )  # fmt: skip
    rt.paths(job_id).create({"job_id": job_id, "spec": spec.model_dump(mode="json")})


def test_a_message_of_an_earlier_placement_claims_nothing(
    settings: Settings, live_redis: redis.Redis
) -> None:
    rt = Runtime.open(settings)
    try:
        # Given a job placed again (token "new") after a first placement ("old")
        _placed(rt, "again-1", "new", ["true"])
        assert rt.live.leases.acquire("n", [0], "again-1|new", ttl=30)
        # When the first placement's message arrives, it runs nothing
        outcome = run_attempt(rt, "again-1", "old", "n", [0], threading.Event())
        assert outcome.startswith("skipped")
        row = rt.registry.get_job("again-1")
        assert (row.status, row.attempt) == ("placed", 0)
        assert rt.live.leases.lease_holders("n", [0]) == {0: "again-1|new"}
    finally:
        rt.close()


def test_a_claimed_job_whose_lease_another_holds_is_stopped_as_lost(
    settings: Settings, live_redis: redis.Redis
) -> None:
    rt = Runtime.open(settings)
    try:
        # Given a placement whose GPU lease is another job's by the time it starts
        _placed(rt, "late-1", "mine", ["sleep", "60"])
        assert rt.live.leases.acquire("n", [0], "other-1|theirs", ttl=30)
        # When its worker runs it, the process it started is stopped at once
        outcome = run_attempt(rt, "late-1", "mine", "n", [0], threading.Event())
        assert outcome.startswith("lost"), outcome
        row = rt.registry.get_job("late-1")
        assert (row.attempt, row.exit_reason) == (1, "lost")
        assert "leased to another job" in (row.error or "")
        assert [a.exit_reason for a in rt.registry.attempts("late-1")] == ["lost"]
        # and the other job keeps its lease
        assert rt.live.leases.lease_holders("n", [0]) == {0: "other-1|theirs"}
    finally:
        rt.close()


def test_an_attempt_whose_worker_died_before_recording_its_start_counts_against_its_retries(
    settings: Settings, live_redis: redis.Redis
) -> None:
    rt = Runtime.open(settings)
    try:
        # Given a job with one retry, placed
        _placed(rt, "doomed-1", "first", ["sleep", "60"], max_retries=1)
        for attempt, token in enumerate(["first", "second"], start=1):
            # whose worker claims it and dies before the attempt's row is written
            row = rt.claim("doomed-1", expect=[JobStatus.PLACED], token=token, **claim_values())
            assert row is not None and row.attempt == attempt
            assert len(rt.registry.attempts("doomed-1")) == attempt - 1
            # When the reconciler finds its lease gone, the attempt is recorded lost
            assert declare_lost(rt, row)
            if attempt == 1:
                # and the one retry queues it again, for a second placement
                assert rt.registry.get_job("doomed-1").status == "queued"
                placement = {"node": "n", "gpu_indices": "[0]", "placement_token": "second"}
                assert rt.transition("doomed-1", JobStatus.PLACED, [JobStatus.QUEUED], **placement)
        # Then the second lost attempt fails it: each claim was an attempt
        row = rt.registry.get_job("doomed-1")
        assert (row.status, row.attempt, row.exit_reason) == ("failed", 2, "lost")
        attempts = rt.registry.attempts("doomed-1")
        assert [(a.number, a.exit_reason, a.node) for a in attempts] == [
            (1, "lost", "n"),
            (2, "lost", "n"),
        ]
        assert all(a.started_at is not None and a.ended_at is not None for a in attempts)
        meta = rt.paths("doomed-1").read_metadata()
        assert (meta["attempt"], meta["exit_reason"], meta["gpus"]) == (2, "lost", [0])
    finally:
        rt.close()


def _queued_with_gpu_0_free(rt: Runtime, job_id: str) -> None:
    """A queued job, GPU 0 of node "n" free and GPU 1 leased."""
    rt.live.register_worker("n", 0, pid=1, host="h")
    rt.live.register_worker("n", 1, pid=1, host="h")
    assert rt.live.leases.acquire("n", [1], "busy-1|t", ttl=30)
    _placed(rt, job_id, "", ["true"])
    assert rt.registry.transition(job_id, JobStatus.QUEUED, expect=[JobStatus.PLACED])
    rt.live.enqueue(job_id, 0, 1, None)


def test_a_job_placed_on_the_gpu_of_the_worker_asking_is_claimed_for_it_in_the_same_pass(
    settings: Settings, live_redis: redis.Redis
) -> None:
    rt = Runtime.open(settings)
    try:
        _queued_with_gpu_0_free(rt, "next-1")
        # When GPU 0's worker asks for a pass
        mine = WorkerGpu("n", 0)
        assert dispatch_pending(rt, mine) == 1
        # Then the job is handed to it claimed: attempt 1, running under the pass's lease
        assert mine.claimed is not None
        row, token, gpus = mine.claimed
        assert (row.id, row.status, row.attempt, gpus) == ("next-1", "running", 1, [0])
        stored = rt.registry.get_job("next-1")
        assert (stored.status, stored.attempt, stored.placement_token) == ("running", 1, token)
        assert (stored.node, stored.gpu_indices) == ("n", "[0]")
        assert stored.placed_at is not None and stored.started_at is not None
        # and Redis shows it running, with its first heartbeat, out of the queue, its
        # lease in the running window and no message sent for it
        assert rt.live.job("next-1")["status"] == "running"
        assert live_redis.exists(rt.keys.heartbeat("next-1"))
        assert rt.live.leases.lease_holders("n", [0]) == {0: f"next-1|{token}"}
        assert 0 < live_redis.pttl(rt.keys.lease("n", 0)) <= settings.lease_ttl * 1000
        assert live_redis.zscore(rt.keys.pending, "next-1") is None
        assert live_redis.llen(queue_for_gpu(settings, "n", 0)) == 0
    finally:
        rt.close()


def test_a_job_cancelled_as_its_gpus_worker_takes_it_is_passed_over_for_the_next(
    settings: Settings, live_redis: redis.Redis
) -> None:
    rt = Runtime.open(settings)
    try:
        # Given a job cancelled in the registry while still at the head of the queue,
        # and one queued behind it
        _queued_with_gpu_0_free(rt, "gone-1")
        assert rt.registry.transition("gone-1", JobStatus.CANCELLED, expect=[JobStatus.QUEUED])
        _placed(rt, "next-3", "", ["true"])
        assert rt.registry.transition("next-3", JobStatus.QUEUED, expect=[JobStatus.PLACED])
        rt.live.enqueue("next-3", 0, 1, None)
        # When GPU 0's worker takes the first, the claim finds it cancelled
        mine = WorkerGpu("n", 0)
        assert dispatch_pending(rt, mine) == 1
        # Then the cancelled job is out of the queue, still cancelled, and the worker
        # is handed the next one, under a lease of its own
        assert live_redis.zscore(rt.keys.pending, "gone-1") is None
        assert rt.registry.get_job("gone-1").status == JobStatus.CANCELLED.value
        assert mine.claimed is not None and mine.claimed.row.id == "next-3"
        assert rt.live.leases.lease_holders("n", [0]) == {0: f"next-3|{mine.claimed.token}"}
        assert live_redis.get(rt.keys.dispatch_lock) is None
        # and with nothing left to take, it takes nothing and leaves its GPU free
        rt.live.leases.release("n", [0], f"next-3|{mine.claimed.token}")
        assert rt.registry.transition("next-3", JobStatus.CANCELLED, [JobStatus.RUNNING])
        again = WorkerGpu("n", 0)
        assert dispatch_pending(rt, again) == 0 and again.claimed is None
        assert rt.live.leases.lease_holders("n", [0]) == {0: None}
    finally:
        rt.close()


def test_a_worker_that_finds_another_pass_running_waits_for_the_lock_and_places_its_own_gpu(
    settings: Settings, live_redis: redis.Redis
) -> None:
    rt, worker = Runtime.open(settings), Runtime.open(settings)
    try:
        _queued_with_gpu_0_free(rt, "next-2")
        # Given another caller's pass under way
        assert rt.live.dispatch.begin("other", max_age=60, limit=8) is not None
        # When GPU 0's worker, its job ended, asks for a pass (on a runtime of its own)
        mine = WorkerGpu("n", 0)
        placed: list[int] = []
        asking = threading.Thread(target=lambda: placed.append(dispatch_pending(worker, mine)))
        asking.start()
        # Then it waits instead of leaving a request for the other pass
        wait_until(lambda: live_redis.llen(rt.keys.dispatch_waiting) == 1, 5, "the wait")
        assert live_redis.get(rt.keys.dispatch_dirty) is None
        # and, handed the lock as that pass ends, places its GPU in its own pass:
        # the job claimed for it, no message sent
        assert not rt.live.dispatch.end("other")
        asking.join(timeout=10)
        assert placed == [1] and mine.claimed is not None and mine.claimed.row.id == "next-2"
        assert rt.registry.get_job("next-2").status == JobStatus.RUNNING.value
        assert live_redis.llen(queue_for_gpu(settings, "n", 0)) == 0
        assert live_redis.get(rt.keys.dispatch_lock) is None
    finally:
        worker.close()
        rt.close()


def test_a_registry_made_before_a_column_was_added_gains_it_empty(database_url: str) -> None:
    registry = Registry(database_url)
    registry.create_jobs(
        [
            {
                "id": "old-1", "name": "old", "kind": "command", "status": "queued",
                "priority": 0, "gpus": 1, "node": None, "attempt": 1, "max_retries": 0,
                "spec": "{}", "created_at": utcnow(),
            }
        ]
    )  # fmt: skip
    with registry.engine.begin() as conn:
        conn.execute(text("ALTER TABLE ugro_jobs DROP COLUMN placement_token"))
    registry.close()
    # Opened again by a newer ugro: the column is there, the old row reads back
    registry = Registry(database_url)
    try:
        assert registry.get_job("old-1").placement_token is None
        assert "placement_token" in {
            c["name"] for c in inspect(registry.engine).get_columns("ugro_jobs")
        }
    finally:
        registry.close()
