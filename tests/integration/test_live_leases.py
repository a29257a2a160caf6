"""GPU leases in a real Redis: atomic, held by one holder at a time."""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

import redis

from ugro import Client, JobSpec, JobStatus
from ugro.live.state import LiveState, QueuedEntry
from ugro.registry.models import utcnow
from ugro.runtime import Runtime
from ugro.scheduling.dispatch import place
from ugro.scheduling.placement import PendingJob, Placement
from ugro.scheduling.submit_lease import SubmitLease
from ugro.settings import Settings
from ugro.transport.queues import queue_for_gpu


def test_leases_are_all_or_nothing_and_only_their_holder_renews_or_releases(
    settings: Settings, live_redis: redis.Redis
) -> None:
    leases = LiveState.open(settings).leases
    assert leases.acquire("n", [0, 1], "a|1", ttl=10)
    assert not leases.acquire("n", [1, 2], "b|1", ttl=10)  # GPU 1 is taken: none taken
    assert leases.lease_holders("n", [0, 1, 2]) == {0: "a|1", 1: "a|1", 2: None}
    assert not leases.renew("n", [0, 1], "b|1", ttl=10)
    assert leases.release("n", [0, 1], "b|1") == 0
    assert leases.renew("n", [0, 1], "a|1", ttl=10)
    assert leases.release("n", [0, 1], "a|1") == 2
    assert leases.acquire("n", [1, 2], "b|1", ttl=10)


def test_concurrent_acquires_of_one_gpu_have_one_winner(
    settings: Settings, live_redis: redis.Redis
) -> None:
    leases = LiveState.open(settings).leases
    wins: list[str] = []
    barrier = threading.Barrier(8)

    def grab(name: str) -> None:
        mine = LiveState.open(settings).leases
        barrier.wait()
        if mine.acquire("n", [0], f"{name}|t", ttl=10):
            wins.append(name)

    threads = [threading.Thread(target=grab, args=(f"w{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1
    assert leases.lease_holders("n", [0]) == {0: f"{wins[0]}|t"}


def test_a_lease_expires_without_renewal(settings: Settings, live_redis: redis.Redis) -> None:
    leases = LiveState.open(settings).leases
    assert leases.acquire("n", [0], "a|1", ttl=0.05)
    time.sleep(0.2)  # a TTL is wall-clock time: nothing to wait on but the clock
    assert leases.lease_holders("n", [0]) == {0: None}
    assert not leases.renew("n", [0], "a|1", ttl=10)


def test_queueing_says_a_pass_is_needed_unless_every_gpu_was_leased_as_it_queued(
    settings: Settings, live_redis: redis.Redis
) -> None:
    live = LiveState.open(settings)
    for index in (0, 1):
        live.register_worker("n", index, pid=1, host="h")
    entry = [QueuedEntry("job-a", 0, 1)]
    # Given a snapshot that saw two GPUs, one of them free: a pass is needed
    assert live.leases.acquire("n", [0], "x|1", ttl=10)
    live.dispatch.snapshot(max_age=60)
    assert live.enqueue_many(entry, watch=True)
    # Given both leased as the job is queued: whoever frees one runs the next pass
    assert live.leases.acquire("n", [1], "y|1", ttl=10)
    assert not live.enqueue_many(entry, watch=True)
    # Given a lease let go, or a worker come up since the snapshot: a pass is needed
    live.leases.release("n", [1], "y|1")
    assert live.enqueue_many(entry, watch=True)
    assert live.leases.acquire("n", [1], "y|1", ttl=10)
    live.register_worker("n", 2, pid=1, host="h")
    assert live.enqueue_many(entry, watch=True)
    # Given a snapshot older than a second, or no watch asked for: a pass is needed
    live.dispatch.snapshot(max_age=60)
    assert live.leases.acquire("n", [2], "z|1", ttl=10)
    assert not live.enqueue_many(entry, watch=True)
    assert live.dispatch.last_seen is not None
    live.dispatch.last_seen.at -= 2
    assert live.enqueue_many(entry, watch=True)
    assert live.enqueue_many(entry)
    assert live.queued_ids() == {"job-a"}


def test_a_pass_that_gives_gpus_back_asks_for_another(
    settings: Settings, live_redis: redis.Redis
) -> None:
    # A job queued while those GPUs looked taken skipped its own pass (see
    # enqueue_many): the pass that lets them go must look again.
    rt = Runtime.open(settings)
    try:
        rt.registry.create_job(
            id="gone-1", name="gone", kind="command", status="queued", priority=0, gpus=1,
            node=None, attempt=0, max_retries=0, spec="{}", created_at=utcnow(),
        )  # fmt: skip
        assert rt.registry.transition("gone-1", JobStatus.CANCELLED, expect=[JobStatus.QUEUED])
        rt.live.register_worker("n", 0, pid=1, host="h")
        assert not place(rt, Placement("gone-1", "n", (0,)))  # cancelled meanwhile
        assert rt.live.leases.lease_holders("n", [0]) == {0: None}
        assert rt.live.redis.get(rt.keys.dispatch_dirty) is not None
    finally:
        rt.close()


def _job_row(job_id: str, status: str, node: str | None = None, gpus: str | None = None) -> dict:
    return {
        "id": job_id, "name": job_id, "kind": "command", "status": status, "priority": 0,
        "gpus": 1, "node": node, "gpu_indices": gpus, "attempt": 1, "max_retries": 0,
        "spec": "{}", "created_at": utcnow(),
    }  # fmt: skip


def test_a_submit_plans_on_what_it_saw_and_the_lease_checks_what_the_plan_relied_on(
    settings: Settings, live_redis: redis.Redis
) -> None:
    rt = Runtime.open(settings)
    try:
        for index in (0, 1):
            rt.live.register_worker("n", index, pid=1, host="h")
        leaser = SubmitLease(rt)
        snapshots: list[int] = []
        snapshot = rt.live.dispatch.snapshot

        def counted(*args: Any, **kwargs: Any) -> Any:
            snapshots.append(1)
            return snapshot(*args, **kwargs)

        rt.live.dispatch.snapshot = counted  # type: ignore[method-assign]
        first = PendingJob("a-1", 1, None, None)
        # The first submit reads the GPUs and the registry afresh
        leased = leaser.lease(first)
        assert leased is not None and leased[0].gpus == (0,) and len(snapshots) == 1
        rt.live.leases.release("n", [0], f"a-1|{leased[1]}")
        # The next, within a second, plans on what it saw: no snapshot, one script
        leased = leaser.lease(PendingJob("b-1", 1, None, None))
        assert leased is not None and leased[0].gpus == (0,) and len(snapshots) == 1
        # A GPU taken since: the script says who holds what, and the plan is made again
        leased = leaser.lease(PendingJob("c-1", 1, None, None))
        assert leased is not None and leased[0].gpus == (1,) and len(snapshots) == 1
        # Every GPU taken: the job is queued, without asking Redis again
        assert leaser.lease(PendingJob("d-1", 1, None, None)) is None
        assert len(snapshots) == 1
        rt.live.redis.delete(*(rt.keys.lease("n", i) for i in (0, 1)))
        # What it saw is more than a second old: it reads afresh
        assert rt.live.dispatch.last_seen is not None
        rt.live.dispatch.last_seen.at -= 2
        leased = leaser.lease(PendingJob("e-1", 1, None, None))
        assert leased is not None and leased[0].gpus == (0,) and len(snapshots) == 2
        rt.live.leases.release("n", [0], f"e-1|{leased[1]}")
        # A job waiting in the queue goes first: the script leases nothing
        rt.live.enqueue_many([QueuedEntry("q-1", 0, 2)])
        assert leaser.lease(PendingJob("f-1", 1, None, None)) is None
        assert rt.live.leases.lease_holders("n", [0, 1]) == {0: None, 1: None}
        assert len(snapshots) == 2
        rt.live.dequeue("q-1")
        # For a second after that, its submits are queued without asking
        assert leaser.lease(PendingJob("f-2", 1, None, None)) is None
        assert rt.live.leases.lease_holders("n", [0, 1]) == {0: None, 1: None}
        leaser._queue_until -= 2
        # Redis wiped (a new epoch) while a job holds GPU 0: the registry is read
        # again before the plan, and GPU 0 is not handed out twice
        rt.registry.create_jobs([_job_row("g-1", "placed", "n", "[0]")])
        rt.live.redis.delete(rt.keys.epoch)
        leased = leaser.lease(PendingJob("h-1", 1, None, None))
        assert leased is not None and leased[0].gpus == (1,) and len(snapshots) == 3
    finally:
        rt.close()


def test_a_submit_planned_on_what_it_saw_goes_where_a_pass_would_after_a_gpu_was_freed(
    settings: Settings, live_redis: redis.Redis
) -> None:
    rt = Runtime.open(settings)
    try:
        # Given three free GPUs on node "a", and node "b"'s one GPU leased
        for index in (0, 1, 2):
            rt.live.register_worker("a", index, pid=1, host="h")
        rt.live.register_worker("b", 0, pid=1, host="h")
        assert rt.live.leases.acquire("b", [0], "other|1", ttl=10)
        leaser = SubmitLease(rt)
        # and a client that saw them so as it placed a job, which has ended since
        leased = leaser.lease(PendingJob("x-1", 1))
        assert leased is not None and leased[0] == Placement("x-1", "a", (0,))
        rt.live.leases.release("a", [0], f"x-1|{leased[1]}")
        # When "b"'s GPU is let go too, and the client submits again within the second
        rt.live.leases.release("b", [0], "other|1")
        leased = leaser.lease(PendingJob("y-1", 1))
        # Then the job goes where a pass would place it: "b", the tightest fit, not
        # the GPU of "a" the client's view still showed as the tightest free one
        assert leased is not None and leased[0] == Placement("y-1", "b", (0,))
    finally:
        rt.close()


def test_a_submit_planned_on_what_its_client_saw_is_placed_in_one_round_trip(
    settings: Settings, live_redis: redis.Redis
) -> None:
    with Client(settings) as client:
        rt = client.rt
        node = settings.node_name
        for index in (0, 1, 2):
            rt.live.register_worker(node, index, pid=1, host="h")
        two_trips: list[str] = []
        placed_new = rt.live.placed_new

        def counted(job_id: str, *args: Any, **kwargs: Any) -> None:
            two_trips.append(job_id)
            placed_new(job_id, *args, **kwargs)

        rt.live.placed_new = counted  # type: ignore[method-assign]
        events = rt.live.subscribe()
        # The first submit reads the GPUs afresh: the lease, then the live record
        first = client.submit(JobSpec(name="first", command=["true"]))
        assert (first.status, first.gpu_indices) == (JobStatus.PLACED, [0])
        rt.live.leases.release(node, [0], _holder(rt, first.id))  # it has ended
        # The next plans on what the first saw: one script takes the lease and
        # writes what placed_new writes
        second = client.submit(
            JobSpec(name="second", command=["true"], env={"API_TOKEN": "s3cret"}, timeout=90)
        )
        assert two_trips == [first.id]
        assert (second.status, second.gpu_indices) == (JobStatus.PLACED, [0])
        live = {job.id: rt.live.job(job.id) for job in (first, second)}
        assert live[first.id].keys() == live[second.id].keys()
        assert live[second.id]["status"] == "placed" and live[second.id]["timeout"] == "90.0"
        assert live[second.id]["gpus_held"] == "[0]"
        assert rt.live.secrets(second.id) == {"API_TOKEN": "s3cret"}
        row = rt.registry.get_job(second.id)
        queue = rt.keys.celery(queue_for_gpu(settings, node, 0))
        messages = [json.loads(raw) for raw in live_redis.lrange(queue, 0, -1)]
        bodies = [json.loads(base64.b64decode(message["body"])) for message in messages]
        assert [body[1]["job_id"] for body in bodies] == [second.id, first.id]
        assert bodies[0][1]["token"] == row.placement_token
        assert _holder(rt, second.id) == f"{second.id}|{row.placement_token}"
        announced: list[str] = []
        deadline = time.monotonic() + 5
        while len(announced) < 2 and time.monotonic() < deadline:
            if (message := events.get_message(timeout=1)) is not None:
                announced.append(message["data"])
        assert announced == [f"{first.id} placed", f"{second.id} placed"]
        # A GPU taken since it was seen: the row written for it goes again, and
        # the lease is planned again on what the script found
        assert rt.live.leases.acquire(node, [1], "other|1", ttl=10)
        third = client.submit(JobSpec(name="third", command=["true"]))
        assert (third.status, third.gpu_indices) == (JobStatus.PLACED, [2])
        assert two_trips == [first.id, third.id]
        assert [job.id for job in rt.registry.list_jobs()].count(third.id) == 1
        # Every GPU taken: the job is queued, with no message sent for it
        fourth = client.submit(JobSpec(name="fourth", command=["true"]))
        assert fourth.status is JobStatus.QUEUED
        assert rt.registry.get_job(fourth.id).status == "queued"
        assert rt.live.job(fourth.id)["status"] == "queued"
        assert live_redis.llen(rt.keys.celery(queue_for_gpu(settings, node, 2))) == 1
        assert two_trips == [first.id, third.id]
        events.close()


def _holder(rt: Runtime, job_id: str) -> str:
    """The holder of the lease of a job just placed (from its registry row)."""
    row = rt.registry.get_job(job_id)
    return f"{job_id}|{row.placement_token}"
