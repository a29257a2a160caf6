"""The circuit breaker against a real Redis: opens, waits, half-opens, decides once."""

from __future__ import annotations

import threading

import pytest
import redis

from ugro.health.breaker import CircuitBreaker
from ugro.live.keys import Keys
from ugro.settings import Settings

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def breaker(live_redis: redis.Redis, settings: Settings) -> CircuitBreaker:
    return CircuitBreaker(live_redis, Keys(settings.redis_prefix), failures=3, open_seconds=60)


def test_three_failures_in_a_row_open_it_and_a_success_resets_the_count(
    breaker: CircuitBreaker,
) -> None:
    t = 1000.0
    assert breaker.record("n", ok=False, now=t).state == "closed"
    assert breaker.record("n", ok=False, now=t + 1).failures == 2
    assert breaker.record("n", ok=True, now=t + 2).failures == 0  # not in a row
    for i in range(2):
        assert breaker.record("n", ok=False, now=t + 3 + i).state == "closed"
    opened = breaker.record("n", ok=False, now=t + 5)
    assert (opened.state, opened.change, opened.opened_at) == ("open", "opened", t + 5)
    assert not breaker.status("n", now=t + 6).admits_jobs


def test_checks_inside_the_window_change_nothing_then_one_probe_decides(
    breaker: CircuitBreaker,
) -> None:
    for i in range(3):
        breaker.record("n", ok=False, now=100.0 + i)
    inside = breaker.record("n", ok=True, now=130.0)
    assert (inside.state, inside.change) == ("open", "")
    assert breaker.status("n", now=161.9).state == "open"
    assert breaker.status("n", now=162.0).state == "half_open"
    reopened = breaker.record("n", ok=False, now=170.0)  # the probe fails: a new window
    assert (reopened.state, reopened.change, reopened.opened_at) == ("open", "reopened", 170.0)
    assert breaker.record("n", ok=True, now=200.0).state == "open"
    closed = breaker.record("n", ok=True, now=230.0)
    assert (closed.state, closed.change, closed.failures) == ("closed", "closed", 0)
    assert breaker.status("n").admits_jobs


def test_concurrent_sweeps_count_every_check_once_and_open_it_once(
    live_redis: redis.Redis, settings: Settings
) -> None:
    breaker = CircuitBreaker(live_redis, Keys(settings.redis_prefix), failures=200, open_seconds=60)
    changes: list[str] = []
    lock = threading.Lock()

    def sweep() -> None:
        own = CircuitBreaker(
            redis.Redis.from_url(settings.effective_redis_url, decode_responses=True),
            Keys(settings.redis_prefix),
            failures=200,
            open_seconds=60,
        )
        for _ in range(50):
            change = own.record("n", ok=False, now=500.0).change
            if change:
                with lock:
                    changes.append(change)

    threads = [threading.Thread(target=sweep) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    status = breaker.status("n", now=500.0)
    assert changes == ["opened"]  # 400 failed checks; the 200th opened it, once
    assert (status.state, status.failures) == ("open", 200)
    # Once the window passes, two sweeps racing on the half-open probe: one decides.
    results = [breaker.record("n", ok=True, now=600.0), breaker.record("n", ok=False, now=600.0)]
    assert [r.change for r in results] == ["closed", ""]
    assert breaker.status("n", now=600.0).state == "closed"
