"""A circuit breaker per node, in Redis: keeps new jobs off a node that keeps
failing its health checks, and lets them back by itself once it recovers.

closed -> (``breaker_failures`` failed checks in a row) -> open for
``breaker_open_seconds`` -> half-open: the next check decides, closing it or
opening it for another window. Every change is one Lua script, so concurrent
sweeps neither lose a count nor both decide a half-open probe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

import redis

from ugro.live.clock import server_time
from ugro.live.keys import Keys
from ugro.live.scripts import lua_source

BreakerState = Literal["closed", "open", "half_open"]
#: What a check changed: opened, closed, reopened (a half-open probe failed) or "".
BreakerChange = Literal["opened", "closed", "reopened", ""]


@dataclass(frozen=True)
class BreakerStatus:
    state: BreakerState
    failures: int
    opened_at: float | None
    change: BreakerChange = ""

    @property
    def admits_jobs(self) -> bool:
        return self.state == "closed"


class CircuitBreaker:
    def __init__(self, client: redis.Redis, keys: Keys, failures: int, open_seconds: float) -> None:
        self.redis = client
        self.keys = keys
        self.threshold = failures
        self.window = open_seconds
        source = lua_source("breaker_record.lua")
        self._record = client.register_script(source)

    def record(self, node: str, ok: bool, now: float | None = None) -> BreakerStatus:
        """Count one check of ``node``; returns the breaker after it."""
        at = server_time(self.redis) if now is None else now
        state, failures, change, opened_at = cast(
            list[str],
            self._record(
                keys=[self.keys.breaker(node)],
                args=[int(ok), at, self.threshold, self.window],
            ),
        )
        return BreakerStatus(
            cast(BreakerState, state),
            int(failures),
            float(opened_at) or None,
            cast(BreakerChange, change),
        )

    def status(self, node: str, now: float | None = None) -> BreakerStatus:
        """The breaker as it stands: an open breaker whose window has passed is
        half-open (its next check decides)."""
        at = server_time(self.redis) if now is None else now
        raw = cast(dict[str, str], self.redis.hgetall(self.keys.breaker(node)))
        state = raw.get("state", "closed")
        opened_at = float(raw.get("opened_at") or 0) or None
        if state == "open" and opened_at is not None and at - opened_at >= self.window:
            state = "half_open"
        return BreakerStatus(cast(BreakerState, state), int(raw.get("failures") or 0), opened_at)

    def forget(self, node: str) -> None:
        self.redis.delete(self.keys.breaker(node))
