"""Each user's decayed usage through a replay, as beat's ranking reads it, kept up
to date tick by tick instead of summed anew (``bench.sched_policies``)."""

from __future__ import annotations

import heapq
import math
from collections import defaultdict

from ugro.registry.usage import Used
from ugro.scheduling.fair_share import decayed_usage

# rank_queue reads the attempts that ended within this many half-lives
USAGE_HALF_LIVES = 6


class UsageLedger:
    """Each user's decayed usage at a tick, as ``rank_queue`` reads it:
    ``decayed_usage`` over the attempts still running or ended within
    ``USAGE_HALF_LIVES`` half-lives.

    Summed anew, that is every attempt of the trace at every tick; the ledger
    carries the sum from one tick to the next instead. What was counted at the last
    tick has since aged by the same time, so it is multiplied by the decay that
    ``decayed_usage`` applies for that age; what ran since (whole users' running
    GPUs at once, and the stretches of attempts that started or ended since) is
    added as ``decayed_usage`` of it; an attempt that leaves the window is taken off
    as ``decayed_usage`` of it. ``tests/unit/test_bench_sched.py`` holds it to
    ``decayed_usage`` over every attempt."""

    def __init__(self, half_life: float) -> None:
        self.half_life = half_life
        self.at = 0.0  # when ``usage`` was last brought up to date
        self.usage: dict[str, float] = {}
        self.running_gpus: dict[str, int] = defaultdict(int)
        self.attempts: dict[str, int] = defaultdict(int)  # running or in the window
        self.fresh: dict[int, Used] = {}  # started since ``at``, still running
        self.stretches: list[Used] = []  # run since ``at`` by attempts ended since
        self.ended: list[tuple[float, int, Used]] = []  # (end, job, attempt): a heap

    def start(self, job: int, user: str, gpus: int, now: float) -> None:
        self.fresh[job] = Used(user, gpus, now, None)
        self.running_gpus[user] += gpus
        self.attempts[user] += 1

    def end(self, job: int, user: str, gpus: int, started: float, now: float) -> None:
        self.fresh.pop(job, None)
        self.stretches.append(Used(user, gpus, max(started, self.at), now))
        self.running_gpus[user] -= gpus
        heapq.heappush(self.ended, (now, job, Used(user, gpus, started, now)))

    def at_time(self, now: float) -> dict[str, float]:
        """Each user's decayed GPU-seconds at ``now`` (not before the last call)."""
        rate = math.log(2) / self.half_life
        aged = math.exp(-rate * (now - self.at))
        usage = {user: used * aged for user, used in self.usage.items()}
        fresh_gpus: dict[str, int] = defaultdict(int)
        for used in self.fresh.values():
            fresh_gpus[used.user] += used.gpus
        throughout = [
            Used(user, gpus - fresh_gpus[user], self.at, None)
            for user, gpus in self.running_gpus.items()
            if gpus > fresh_gpus[user]
        ]
        since = [*throughout, *self.fresh.values(), *self.stretches]
        for user, seconds in decayed_usage(since, now, self.half_life).items():
            usage[user] = usage.get(user, 0.0) + seconds
        horizon = now - USAGE_HALF_LIVES * self.half_life
        while self.ended and self.ended[0][0] < horizon:
            _, _, gone = heapq.heappop(self.ended)
            self.attempts[gone.user] -= 1
            if not self.attempts[gone.user]:
                usage.pop(gone.user, None)  # (exactly nothing, not a rounding residue)
            else:
                left = usage.get(gone.user, 0.0)
                usage[gone.user] = left - decayed_usage([gone], now, self.half_life).get(
                    gone.user, 0.0
                )
        self.usage, self.at = usage, now
        self.fresh.clear()
        self.stretches.clear()
        return dict(usage)
