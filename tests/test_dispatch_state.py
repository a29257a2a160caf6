"""The dispatch lock and snapshot in a real Redis: a pass's two round trips."""

from __future__ import annotations

import threading

import pytest
import redis

from tests.conftest import wait_until
from ugro.dispatch_state import Snapshot
from ugro.live import LiveState
from ugro.redis_server import EmbeddedRedis
from ugro.settings import Settings


def _two_gpus_and_three_jobs(live: LiveState) -> None:
    for index in (0, 1):
        live.register_worker("n", index, pid=1, host="h")
    live.enqueue_many(
        [
            ("job-a", 0, 1, None, None, None),
            ("job-b", 5, 2, "n", 30.0, None),
            ("job-c", 0, 1, None, None, None),
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
    assert head == [("job-b", 2, "n", 30.0), ("job-a", 1, None, None)]
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
    live.released("n", [0], "done|1", "done", writes=writes, status="finished")
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
    live.released("n", [0], "done|1", "done", writes=writes, status="finished")
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
