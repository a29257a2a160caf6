"""A preemption under way, kept in Redis: the job that stopped others heads the
queue until it starts, and the jobs it stopped come back right behind it
(``ugro.scheduling.preemption``).

What is kept is looked at lazily: a job that is no longer pending has started (or
was cancelled), and counts for nothing here, so placing a job costs dispatch no
write."""

from __future__ import annotations

import json
from typing import Any, cast

import redis

from ugro.live.keys import Keys
from ugro.live.scripts import lua_source

# How long the record of a preemption, and of the jobs it stopped, is kept: far
# longer than any wait for the GPUs of a stopped job.
_TTL = 86400


class PreemptionState:
    """The preemption under way (``Keys.preempting``) and the jobs stopped for it
    that wait to resume (``Keys.preempted``)."""

    def __init__(self, client: redis.Redis, keys: Keys, priority_weight: int) -> None:
        self.redis = client
        self.keys = keys
        self._weight = priority_weight
        self._front = client.register_script(lua_source("queue_front.lua"))

    def begin(self, job_id: str, victims: list[str], now: float, settle: float) -> bool:
        """Record that ``job_id`` stops ``victims`` at ``now`` and move it to the
        front of the queue; False when another preemption is under way (none
        begins until the last one's job started, or ``settle`` seconds passed)."""
        if self.under_way(now) is not None:
            return False
        record = json.dumps({"job": job_id, "victims": victims, "at": now, "until": now + settle})
        self.redis.set(self.keys.preempting, record, ex=_TTL)
        self._front(keys=[self.keys.pending], args=[job_id, self._weight, ""])
        return True

    def under_way(self, now: float) -> str | None:
        """The job of the preemption under way: it waits for its victims' GPUs."""
        record = self._record()
        if record is None or now >= float(record["until"]):
            return None
        return self.first_in_queue(record)

    def preempting(self) -> str | None:
        """The job that stopped others and has not started yet."""
        record = self._record()
        return None if record is None else self.first_in_queue(record)

    def stopping_for(self, job_id: str) -> list[str]:
        """The jobs being stopped for ``job_id`` while it waits for their GPUs."""
        record = self._record()
        if record is None or record["job"] != job_id or self.first_in_queue(record) is None:
            return []
        return [str(victim) for victim in record["victims"]]

    def first_in_queue(self, record: dict[str, Any]) -> str | None:
        job_id = str(record["job"])
        return job_id if self.redis.zscore(self.keys.pending, job_id) is not None else None

    def requeued(self, job_id: str) -> None:
        """A job stopped for another is back in the queue: behind that job."""
        self.redis.sadd(self.keys.preempted, job_id)
        self.redis.expire(self.keys.preempted, _TTL)
        self._front(keys=[self.keys.pending], args=[job_id, self._weight, self.preempting() or ""])

    def waiting(self) -> list[str]:
        """The jobs stopped for another that wait in the queue to resume."""
        members = cast(set[str], self.redis.smembers(self.keys.preempted))
        if not members:
            return []
        ordered = sorted(members)
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ordered:
            pipe.zscore(self.keys.pending, job_id)
        scores = pipe.execute()
        queued = [job for job, score in zip(ordered, scores, strict=True) if score is not None]
        gone = members - set(queued)
        if gone:
            self.redis.srem(self.keys.preempted, *gone)
        return queued

    def _record(self) -> dict[str, Any] | None:
        value = self.redis.get(self.keys.preempting)
        return None if value is None else dict(json.loads(cast(str, value)))
