"""Requests to stop running jobs, kept in Redis for their workers to find: a
person's cancel, the progress scan's stop of a stuck job, and the stop of a gang
job's attempt when one of its members ended badly."""

from __future__ import annotations

import json
from typing import Any, cast

import redis

from ugro.live.keys import Keys

# A request outlives any wait for it: it is deleted when the attempt ends.
_TTL = 86400


class StopRequests:
    """Stop requests for running jobs (``Keys.cancel``, ``Keys.gang_stop``)."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    def request_cancel(self, job_id: str, grace: float, reason: str = "cancelled") -> None:
        """Ask the job's worker to stop it: ``cancelled`` by a person, or ``stuck``."""
        value = json.dumps({"grace": grace, "reason": reason})
        self.redis.set(self.keys.cancel(job_id), value, ex=_TTL)

    def cancel_requested(self, job_id: str) -> tuple[float, str] | None:
        """(grace, reason) when someone asked to stop the job."""
        return _stop_asked(self.redis.get(self.keys.cancel(job_id)))

    def stop_gang(self, job_id: str, attempt: int, why: dict[str, Any]) -> bool:
        """Ask every member of a gang job's attempt to stop, for ``why`` (the rank,
        node, reason and error of the member whose end stops them); False when
        another member asked first (its reason stands)."""
        key = self.keys.gang_stop(job_id, attempt)
        return bool(self.redis.set(key, json.dumps(why), nx=True, ex=_TTL))

    def gang_stopped(self, job_id: str, attempt: int) -> dict[str, Any] | None:
        """Why a gang job's attempt is being stopped, if it is."""
        value = self.redis.get(self.keys.gang_stop(job_id, attempt))
        return None if value is None else dict(json.loads(cast(str, value)))

    def member_stop_requested(
        self, job_id: str, attempt: int, grace: float
    ) -> tuple[float, str] | None:
        """``cancel_requested`` for a member of a gang job, which also stops (reason
        ``stopped``, after ``grace``) when its attempt is being stopped: one round
        trip."""
        cancel, gang = self.redis.mget(
            [self.keys.cancel(job_id), self.keys.gang_stop(job_id, attempt)]
        )
        if cancel is not None:
            return _stop_asked(cancel)
        return None if gang is None else (grace, "stopped")


def _stop_asked(value: Any) -> tuple[float, str] | None:
    if value is None:
        return None
    asked = json.loads(cast(str, value))
    return float(asked["grace"]), str(asked["reason"])
