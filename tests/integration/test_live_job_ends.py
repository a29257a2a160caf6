"""When running jobs end, as a reservation reckons it: by their timeouts, and by
the ETAs their recorded progress gives (``RunningEnds.time_left``, ``expected_left``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import redis

from ugro.live.state import LiveState
from ugro.settings import Settings

NOW = 1_000_000.0


@pytest.fixture
def live(settings: Settings, live_redis: redis.Redis) -> LiveState:
    return LiveState.open(settings)


@pytest.mark.timeout(30)
def test_an_eta_ahead_comes_before_the_timeout_and_one_passed_does_not_count(
    live: LiveState,
) -> None:
    now = NOW

    def progress(eta: float, updated: float) -> str:
        stamp = datetime.fromtimestamp(updated, UTC).isoformat()
        return json.dumps({"eta_seconds": eta, "last_update": stamp, "percent": 50.0})

    # Given four running jobs of an hour's timeout, started 600 s ago
    common = {"timeout": 3600, "started": now - 600}
    live.set_job("eta-ahead", **common, progress=progress(eta=200, updated=now - 100))
    live.set_job("eta-passed", **common, progress=progress(eta=50, updated=now - 100))
    live.set_job("eta-late", **common, progress=progress(eta=9000, updated=now))
    live.set_job("no-progress", **common)
    live.set_job("no-timeout", started=now - 600, progress=progress(eta=30, updated=now))
    jobs = ["eta-ahead", "eta-passed", "eta-late", "no-progress", "no-timeout"]
    # Then the latest ends are the timeouts', and the expected ones the ETAs' when
    # still ahead, never after the timeout
    assert live.ends.time_left(jobs, now) == {
        "eta-ahead": 3000,
        "eta-passed": 3000,
        "eta-late": 3000,
        "no-progress": 3000,
        "no-timeout": None,
    }
    assert live.ends.expected_left(jobs, now) == {
        "eta-ahead": 100,
        "eta-passed": 3000,
        "eta-late": 3000,
        "no-progress": 3000,
        "no-timeout": 30,
    }


@pytest.mark.timeout(30)
def test_a_job_being_stopped_ends_by_its_grace_and_only_in_the_attempt_stopped(
    live: LiveState,
) -> None:
    now = NOW
    # Given two running jobs of an hour's timeout and one without, each asked to
    # stop within 30 s (a preemption's victims)
    live.set_job("stopping", timeout=3600, started=now - 600)
    live.set_job("untimed", started=now - 600)
    live.set_job("resumed", timeout=3600, started=now - 600)
    for job_id in ("stopping", "untimed", "resumed"):
        live.ends.stop_by(job_id, now + 30)
    # and one that has started again since: the stop was its last attempt's
    live.set_job("resumed", started=now - 5)
    # Then the first two end by their grace, the restarted one by its timeout
    assert live.ends.time_left(["stopping", "untimed", "resumed"], now) == {
        "stopping": 30,
        "untimed": 30,
        "resumed": 3595,
    }
