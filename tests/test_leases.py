"""GPU leases in a real Redis: atomic, held by one holder at a time."""

from __future__ import annotations

import threading
import time

import redis

from ugro.live import LiveState
from ugro.settings import Settings


def test_leases_are_all_or_nothing_and_only_their_holder_renews_or_releases(
    settings: Settings, live_redis: redis.Redis
) -> None:
    live = LiveState.open(settings)
    assert live.acquire("n", [0, 1], "a|1", ttl=10)
    assert not live.acquire("n", [1, 2], "b|1", ttl=10)  # GPU 1 is taken: none taken
    assert live.lease_holders("n", [0, 1, 2]) == {0: "a|1", 1: "a|1", 2: None}
    assert not live.renew("n", [0, 1], "b|1", ttl=10)
    assert live.release("n", [0, 1], "b|1") == 0
    assert live.renew("n", [0, 1], "a|1", ttl=10)
    assert live.release("n", [0, 1], "a|1") == 2
    assert live.acquire("n", [1, 2], "b|1", ttl=10)


def test_concurrent_acquires_of_one_gpu_have_one_winner(
    settings: Settings, live_redis: redis.Redis
) -> None:
    live = LiveState.open(settings)
    wins: list[str] = []
    barrier = threading.Barrier(8)

    def grab(name: str) -> None:
        mine = LiveState.open(settings)
        barrier.wait()
        if mine.acquire("n", [0], f"{name}|t", ttl=10):
            wins.append(name)

    threads = [threading.Thread(target=grab, args=(f"w{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1
    assert live.lease_holders("n", [0]) == {0: f"{wins[0]}|t"}


def test_a_lease_expires_without_renewal(settings: Settings, live_redis: redis.Redis) -> None:
    live = LiveState.open(settings)
    assert live.acquire("n", [0], "a|1", ttl=0.05)
    time.sleep(0.2)  # a TTL is wall-clock time: nothing to wait on but the clock
    assert live.lease_holders("n", [0]) == {0: None}
    assert not live.renew("n", [0], "a|1", ttl=10)
