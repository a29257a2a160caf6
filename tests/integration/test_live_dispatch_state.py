"""The dispatch lock and snapshot in a real Redis: a pass's two round trips."""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis

from tests.conftest import wait_until
from ugro.live.dispatch_state import FreedGpu, Snapshot, TakenForGpu
from ugro.live.scripts import lua_source
from ugro.live.state import LiveState, QueuedEntry
from ugro.ops.redis_server import EmbeddedRedis
from ugro.settings import Settings


def _two_gpus_and_three_jobs(live: LiveState) -> None:
    for index in (0, 1):
        live.register_worker("n", index, pid=1, host="h")
    live.enqueue_many(
        [
            QueuedEntry("job-a", 0, 1),
            QueuedEntry("job-b", 5, 2, "n", 30.0),
            QueuedEntry("job-c", 0, 1),
        ]
    )


def test_a_pass_takes_the_lock_with_its_snapshot_and_lets_go_with_its_last_writes(
    settings: Settings, live_redis: redis.Redis
) -> None:
    live = LiveState.open(settings)
    _two_gpus_and_three_jobs(live)
    assert live.leases.acquire("n", [1], "x|1", ttl=10)
    # The lock's holder gets the snapshot: workers, leases and the queue's head in
    # order, with each job's fields
    workers, holders, head = live.dispatch.begin("first", max_age=60, limit=2) or ([], {}, [])
    assert [(w.node, w.index) for w in workers] == [("n", 0), ("n", 1)]
    assert holders == {("n", 0): None, ("n", 1): "x|1"}
    assert head == [("job-b", 2, "n", 30.0, 1), ("job-a", 1, None, None, 1)]
    # Another caller gets no snapshot and leaves a request for the holder
    assert live.dispatch.begin("second", max_age=60, limit=8) is None
    assert live_redis.get(settings.redis_prefix + ":dispatch:dirty") == "1"
    # The holder's last writes go with its end, which sees the request: one more pass
    writes = live.redis.pipeline(transaction=True)
    live.queue_set_job(writes, "job-a", {"status": "placed", "node": "n"})
    assert live.dispatch.end("first", writes)
    assert live.job("job-a")["status"] == "placed"
    assert live.queued_ids() == {"job-b", "job-c"}
    # With no request left, the end lets the lock go: the next caller takes it
    assert not live.dispatch.end("first")
    assert live.dispatch.begin("third", max_age=60, limit=8) is not None
    assert not live.dispatch.end("third")
    # Every GPU leased: the snapshot holds no jobs
    assert live.leases.acquire("n", [0], "y|1", ttl=10)
    assert live.dispatch.snapshot(max_age=60)[2] == []


def test_a_pass_works_on_a_redis_that_lost_its_scripts(
    embedded_settings: Settings, redis_server: EmbeddedRedis
) -> None:
    # A restarted Redis has none of the scripts the client loaded: each call that
    # finds its script gone runs it again on its own, which loads it.
    live = LiveState.open(embedded_settings)
    _two_gpus_and_three_jobs(live)
    live.dispatch.snapshot(max_age=60)
    live.redis.script_flush()
    snapshot = live.dispatch.begin("first", max_age=60, limit=8)
    assert snapshot is not None and [job[0] for job in snapshot[2]] == ["job-b", "job-a", "job-c"]
    live.redis.script_flush()
    assert live.dispatch.snapshot(max_age=60)[2][0][0] == "job-b"
    live.redis.script_flush()
    writes = live.redis.pipeline(transaction=True)
    live.queue_set_job(writes, "job-c", {"status": "placed"})
    assert not live.dispatch.end("first", writes)
    assert live.job("job-c")["status"] == "placed"
    assert live.redis.get(embedded_settings.redis_prefix + ":dispatch:lock") is None
    # A finished job's release sent ahead of a pass goes with the script's source:
    # it cannot find the script gone
    assert live.leases.acquire("n", [0], "done|1", ttl=10)
    live.redis.script_flush()
    writes = live.redis.pipeline(transaction=True)
    live.release_and_set_job("n", [0], "done|1", "done", writes=writes, status="finished")
    assert live.dispatch.begin("second", max_age=60, limit=8, writes=writes) is not None
    assert live.leases.lease_holders("n", [0]) == {0: None}
    assert live.job("done")["status"] == "finished"


def test_the_writes_sent_ahead_of_a_pass_land_first_and_a_failed_one_lets_the_lock_go(
    settings: Settings, live_redis: redis.Redis
) -> None:
    live = LiveState.open(settings)
    _two_gpus_and_three_jobs(live)
    lock = settings.redis_prefix + ":dispatch:lock"
    # A finished job's release goes ahead: the pass sees its GPU free
    assert live.leases.acquire("n", [0], "done|1", ttl=10)
    writes = live.redis.pipeline(transaction=True)
    live.release_and_set_job("n", [0], "done|1", "done", writes=writes, status="finished")
    snapshot = live.dispatch.begin("first", max_age=60, limit=8, writes=writes)
    assert snapshot is not None and snapshot[1][("n", 0)] is None
    assert live.job("done")["status"] == "finished"
    assert not live.dispatch.end("first")
    # A write that fails is raised, and the lock the pass had taken is let go
    live_redis.set(settings.redis_prefix + ":job:broken", "not a hash")
    writes = live.redis.pipeline(transaction=True)
    live.queue_set_job(writes, "broken", {"status": "finished"})
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        live.dispatch.begin("second", max_age=60, limit=8, writes=writes)
    assert live_redis.get(lock) is None


def _first_holds_the_lock(settings: Settings) -> LiveState:
    """Two GPUs, three jobs queued, and caller "first" in a pass."""
    live = LiveState.open(settings)
    _two_gpus_and_three_jobs(live)
    assert live.dispatch.begin("first", max_age=60, limit=8) is not None
    return live


def test_a_caller_that_waits_is_handed_the_lock_as_the_holder_lets_go(
    settings: Settings, live_redis: redis.Redis
) -> None:
    live = _first_holds_the_lock(settings)
    keys = live.keys
    # A GPU worker whose job ended waits (on a connection of its own) instead of
    # leaving a request
    handed: list[Snapshot | None] = []
    waiter = threading.Thread(
        target=lambda: handed.append(
            LiveState.open(settings).dispatch.begin("second", max_age=60, limit=8, wait=4)
        )
    )
    waiter.start()
    wait_until(lambda: live_redis.llen(keys.dispatch_waiting) == 1, 5, "the waiter's entry")
    assert live_redis.get(keys.dispatch_dirty) is None
    # The holder lets go: the lock is the waiter's, for a whole pass, with a snapshot
    assert not live.dispatch.end("first")
    waiter.join(timeout=5)
    assert not waiter.is_alive() and handed[0] is not None
    assert [(w.node, w.index) for w in handed[0][0]] == [("n", 0), ("n", 1)]
    assert live_redis.get(keys.dispatch_lock) == "second"
    assert live_redis.pttl(keys.dispatch_lock) > 20_000
    assert live_redis.llen(keys.dispatch_waiting) == 0
    # With nobody waiting, its end lets the lock go
    assert not live.dispatch.end("second")
    assert live_redis.get(keys.dispatch_lock) is None
    assert live_redis.exists(keys.dispatch_wake("second")) == 0


def test_a_waiter_not_handed_the_lock_in_time_leaves_its_request_and_is_passed_over(
    settings: Settings, live_redis: redis.Redis
) -> None:
    live = _first_holds_the_lock(settings)
    keys = live.keys
    # The holder's pass outlasts the wait: the waiter asks for one more pass instead
    assert live.dispatch.begin("second", max_age=60, limit=8, wait=0.05) is None
    assert live_redis.get(keys.dispatch_dirty) == "1"
    assert live_redis.llen(keys.dispatch_waiting) == 0
    assert live.dispatch.end("first")  # the pass asked for
    # An entry past its deadline (a waiter that died) is passed over: the lock goes
    live_redis.rpush(keys.dispatch_waiting, "ghost 1")
    assert not live.dispatch.end("first")
    assert live_redis.get(keys.dispatch_lock) is None
    assert live_redis.llen(keys.dispatch_waiting) == 0
    # A waiter that finds the lock free by the end of its wait (its holder's lock
    # expired, say) takes it itself
    assert live.dispatch.begin("third", max_age=60, limit=8, ttl=0.1) is not None
    assert live.dispatch.begin("fourth", max_age=60, limit=8, wait=0.3) is not None
    assert live_redis.get(keys.dispatch_lock) == "fourth"
    assert not live.dispatch.end("fourth")


def _one_job_for_gpu_0(
    live: LiveState, gpus: int = 1, node: str | None = None, nodes: int = 1
) -> None:
    """GPU 0 of node "n" free, GPU 1 leased, and one job queued."""
    for index in (0, 1):
        live.register_worker("n", index, pid=1, host="h")
    assert live.leases.acquire("n", [1], "busy|1", ttl=10)
    live.enqueue_many([QueuedEntry("job-a", 0, gpus, node, nodes=nodes)])


def test_a_gpu_worker_whose_job_ended_takes_the_head_of_the_queue_for_its_gpu(
    settings: Settings, live_redis: redis.Redis
) -> None:
    live = LiveState.open(settings)
    _one_job_for_gpu_0(live)
    # and node "a" with two GPUs free: a looser fit, where a pass would not place it
    for index in (0, 1):
        live.register_worker("a", index, pid=1, host="h")
    # When GPU 0's worker asks, its last job's writes going first
    writes = live.redis.pipeline(transaction=True)
    live.queue_set_job(writes, "done-1", {"status": "finished"})
    freed = FreedGpu("n", 0, "tok", lease_ttl=30)
    taken = live.dispatch.take_for_gpu("w", max_age=60, limit=8, gpu=freed, writes=writes)
    # Then the head is its, with the lease in the running window; no pass was run
    assert taken == TakenForGpu("job-a")
    assert live.job("done-1")["status"] == "finished"
    assert live.leases.lease_holders("n", [0]) == {0: "job-a|tok"}
    assert 0 < live_redis.pttl(live.keys.lease("n", 0)) <= 30_000
    assert live.queued_ids() == set()
    assert live_redis.get(live.keys.dispatch_lock) is None
    # With nothing left to take, it is told so, and takes no lock either
    live.leases.release("n", [0], "job-a|tok")
    assert live.dispatch.take_for_gpu("w2", max_age=60, limit=8, gpu=freed) is None
    assert live_redis.get(live.keys.dispatch_lock) is None


@pytest.mark.parametrize(
    "why",
    [
        "two GPUs",
        "a gang of two nodes",
        "another node",
        "unhealthy",
        "blocked",
        "silent",
        "leased",
        "delayed",
        "as tight a node first in order",
        "a tighter node",
        "a lower index free",
    ],
)
def test_a_gpu_worker_takes_nothing_where_a_pass_could_decide_otherwise(
    settings: Settings, live_redis: redis.Redis, why: str
) -> None:
    live = LiveState.open(settings)
    _one_job_for_gpu_0(
        live, gpus=2 if why == "two GPUs" else 1, nodes=2 if why == "a gang of two nodes" else 1
    )
    asking = 0
    if why == "as tight a node first in order":  # one GPU free there too
        live.register_worker("m", 0, pid=1, host="h")
    elif why == "a tighter node":  # one GPU free there, two on "n"
        live.leases.release("n", [1], "busy|1")
        live.register_worker("o", 0, pid=1, host="h")
    elif why == "a lower index free":
        live.leases.release("n", [1], "busy|1")
        asking = 1
    elif why == "another node":
        live.enqueue_many([QueuedEntry("job-a", 0, 1, "m")])
    elif why == "unhealthy":
        live_redis.hset(live.keys.unhealthy_nodes, "n", "breaker open")
    elif why == "blocked":
        live.register_worker("n", 0, pid=1, host="h", blocked="another program")
    elif why == "silent":
        info = {"pid": 1, "host": "h", "seen": time.time() - 120, "blocked": None, "gpu": None}
        live_redis.hset(live.keys.workers, "n:0", json.dumps(info))
    elif why == "leased":
        assert live.leases.acquire("n", [0], "other|2", ttl=10)
    elif why == "delayed":  # due now: it may go before the head
        live.enqueue_many([QueuedEntry("job-r", 9, 1, ready_at=time.time() - 1)])
    freed = FreedGpu("n", asking, "tok", lease_ttl=30)
    # The caller gets the lock and a snapshot to run the pass on, as begin's would
    snapshot = live.dispatch.take_for_gpu("w", max_age=60, limit=8, gpu=freed)
    assert snapshot is not None and not isinstance(snapshot, TakenForGpu)
    assert live_redis.get(live.keys.dispatch_lock) == "w"
    # (whose head is empty where no GPU is left free: a silent worker's is no GPU)
    expected = {"leased": [], "silent": [], "delayed": ["job-r", "job-a"]}.get(why, ["job-a"])
    assert [entry.job_id for entry in snapshot.pending] == expected
    assert live.leases.lease_holders("n", [asking])[asking] != "job-a|tok"
    assert not live.dispatch.end("w")


def test_a_gpu_worker_whose_last_writes_fail_keeps_no_lease_of_the_job_it_took(
    settings: Settings, live_redis: redis.Redis
) -> None:
    live = LiveState.open(settings)
    _one_job_for_gpu_0(live)
    live_redis.script_load(lua_source("dispatch_enter.lua"))  # (as after a first ask)
    # Given an ended job's writes of which one fails (Redis runs the rest of them)
    live_redis.set(live.keys.job("broken"), "not a hash")
    writes = live.redis.pipeline(transaction=True)
    live.queue_set_job(writes, "broken", {"status": "finished"})
    freed = FreedGpu("n", 0, "tok", lease_ttl=30)
    # When the worker asks, the failure is raised
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        live.dispatch.take_for_gpu("w", max_age=60, limit=8, gpu=freed, writes=writes)
    # and the job the script took holds no lease: its GPU is free, and the job,
    # still queued in the registry, is the reconciler's to queue again
    assert live.queued_ids() == set()
    assert live.leases.lease_holders("n", [0]) == {0: None}
    assert live_redis.get(live.keys.dispatch_lock) is None


def test_a_gpu_worker_takes_nothing_while_a_pass_runs_and_waits_for_the_lock(
    settings: Settings, live_redis: redis.Redis
) -> None:
    live = LiveState.open(settings)
    _one_job_for_gpu_0(live)
    assert live.dispatch.begin("holder", max_age=60, limit=8) is not None
    freed = FreedGpu("n", 0, "tok", lease_ttl=30)
    # Not handed the lock in its wait: it leaves the request, and took nothing
    assert live.dispatch.take_for_gpu("w", max_age=60, limit=8, gpu=freed, wait=0.05) is None
    assert live_redis.get(live.keys.dispatch_dirty) == "1"
    assert live.queued_ids() == {"job-a"}
    assert live.leases.lease_holders("n", [0]) == {0: None}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("watch", [False, True], ids=["plain", "watched"])
def test_a_submitted_batch_is_announced_once_by_its_first_job(
    settings: Settings, live_redis: redis.Redis, watch: bool
) -> None:
    live = LiveState.open(settings)
    pubsub = live.subscribe()
    try:
        # (the subscription is in place before the batch is queued)
        wait_until(lambda: live_redis.pubsub_numsub(live.keys.events_channel)[0][1] == 1, 5)
        # When a batch of three is queued
        batch = [QueuedEntry(f"job-{n}", 0, 1) for n in "abc"]
        live.enqueue_many(batch, watch=watch)
        # Then one message names its first job as queued, and no other comes
        # (a read that finds the subscription's own reply returns None: read for 1 s)
        messages = []
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            if (message := pubsub.get_message(timeout=0.1)) is not None:
                messages.append(message["data"])
        assert messages == ["job-a queued"]
    finally:
        pubsub.close()
