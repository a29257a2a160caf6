"""When running jobs end, as a reservation reckons it: at the latest by their
timeouts (or the end of their grace, when they are being stopped), and as
expected by the ETAs of the progress the scan recorded."""

from __future__ import annotations

import json
from datetime import datetime
from typing import cast

import redis

from ugro.live.keys import Keys


def progress_eta_end(progress: str | None) -> float | None:
    """The moment (unix s) a job's recorded progress expects it to end: its last
    update plus its ETA; None when it has no ETA, no last update, or is unreadable.
    (The ETA is reckoned from the last epoch's end, so that is where it starts.)"""
    if not progress:
        return None
    try:
        info = json.loads(progress)
        eta, updated = info.get("eta_seconds"), info.get("last_update")
        if eta is None or not updated:
            return None
        return datetime.fromisoformat(updated).timestamp() + float(eta)
    except (ValueError, TypeError, AttributeError):
        return None


class RunningEnds:
    """Running jobs' ends, read from their live hashes."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    def time_left(self, job_ids: list[str], now: float) -> dict[str, float | None]:
        """Seconds until each job's timeout stops it at the latest (None: no timeout),
        or its stop, when it is being stopped (``stop_by``)."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(self.keys.job(job_id), ["timeout", "started", "stop_by"])
        left: dict[str, float | None] = {}
        for job_id, (timeout, started, stop_by) in zip(job_ids, pipe.execute(), strict=True):
            begun = float(started) if started else now
            left[job_id] = float(timeout) - (now - begun) if timeout else None
            if stop_by:
                of_start, _, by = stop_by.rpartition(":")
                if of_start == started:  # (of this attempt, not an earlier one)
                    stops_in = max(0.0, float(by) - now)
                    ends_in = left[job_id]
                    left[job_id] = stops_in if ends_in is None else min(ends_in, stops_in)
        return left

    def stop_by(self, job_id: str, when: float) -> None:
        """The job's attempt is being stopped and will have ended by ``when`` (unix
        time): a reservation may count on its GPUs then."""
        started = cast(str | None, self.redis.hget(self.keys.job(job_id), "started"))
        if started is not None:
            self.redis.hset(self.keys.job(job_id), "stop_by", f"{started}:{when}")

    def expected_left(self, job_ids: list[str], now: float) -> dict[str, float | None]:
        """Seconds until each job is expected to end: by the ETA of its progress
        (as the progress scan last recorded it) when it has one still ahead, no
        later than its timeout; else as ``time_left``."""
        latest = self.time_left(job_ids, now)
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(self.keys.job(job_id), "progress")
        expected = dict(latest)
        for job_id, progress in zip(job_ids, pipe.execute(), strict=True):
            eta_end = progress_eta_end(progress)
            if eta_end is not None and eta_end > now:
                left = latest[job_id]
                expected[job_id] = eta_end - now if left is None else min(left, eta_end - now)
        return expected
