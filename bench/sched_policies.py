"""The discrete-event replay behind ``python -m bench.sched``: one policy, one trace.

Events are job submissions and job ends (and, for ``ugro-eta``, the moment a
running job's ETA becomes known); every event time with something new runs a
placement pass over the head of the queue, as dispatch does on a submit or an end,
and another while a pass started jobs and brought others into the window.

- ``ugro`` and ``ugro-eta`` call ugro's own ``plan_placements`` (the function
  dispatch's ``plan_on`` calls) on the free GPUs, the nodes' capacity and each busy
  GPU's expected end: its job's timeout for ``ugro``; for ``ugro-eta`` its ETA
  once known (after ``ETA_AFTER`` of the job's run; the true end with an error of
  up to +/- ``eta_error`` of its duration), else, and once an ETA has passed with
  the job still running, its timeout. The pass plans on the first ``window``
  waiting jobs (dispatch reads the first 8, then the first 64 when those would
  leave GPUs free: the same placements as planning on the 64 at once). The
  busy GPUs' ends go with every pass; ``plan_on`` sends them only when a job of
  the window needs more GPUs than any node has free.
- ``fifo``: strict first come first served, the head blocks everything behind it.
- ``fifo-backfill``: EASY backfill on the timeouts: the first job that does not
  fit reserves the nodes where it can start soonest, and a later job may start
  only if it cannot delay that reservation.
- ``sjf-oracle``: the queue ordered by true duration, EASY backfill on true
  durations.

The reference policies place a job on the node with the fewest free GPUs that
holds it (a gang: the N such nodes, one member each), as ugro does.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from ugro.scheduling.placement import PendingJob, plan_placements

POLICIES = ("ugro", "ugro-eta", "fifo", "fifo-backfill", "sjf-oracle")
WINDOW = 64  # as dispatch's _WINDOW: the most waiting jobs a pass plans on
ETA_AFTER = 0.1  # the share of a job's run after which its ETA is known

_END, _SUBMIT, _ETA = 0, 1, 2  # at one instant, ends free GPUs before submits look


@dataclass(frozen=True, slots=True)
class Job:
    """A job of the trace, as the cluster sees it."""

    index: int  # its place in submission order (and in the replay's lists)
    job_id: str  # the trace's
    submit: float
    duration: float  # true run time (s)
    gpus: int  # on each of its nodes
    nodes: int
    user: str
    timeout: float  # what its user declared (s)

    @property
    def total_gpus(self) -> int:
        return self.gpus * self.nodes


class Replay:
    """One policy's replay of ``jobs`` (in submission order, ``Job.index`` their
    positions) on ``nodes`` x ``gpus_per_node`` GPUs; ``run`` returns each job's
    start time."""

    def __init__(
        self,
        jobs: Sequence[Job],
        nodes: int,
        gpus_per_node: int,
        policy: str,
        window: int = WINDOW,
        eta_error: float = 0.2,
        seed: int = 0,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}: one of {', '.join(POLICIES)}")
        self.jobs = jobs
        self.policy = policy
        self.window = window
        width = len(str(nodes - 1))
        names = [f"n{i:0{width}d}" for i in range(nodes)]
        self.free: dict[str, list[int]] = {n: list(range(gpus_per_node)) for n in names}
        self.capacity = dict.fromkeys(names, gpus_per_node)
        self.running: dict[str, dict[int, int]] = {n: {} for n in names}  # job -> its GPUs
        self.total_free = nodes * gpus_per_node
        self.held: dict[int, list[tuple[str, list[int]]]] = {}
        self.start = [math.nan] * len(jobs)
        self.queue: list[tuple[float, int]] = []  # (order key, job index), sorted
        self.pending = [PendingJob(str(j.index), j.gpus, None, j.timeout, j.nodes) for j in jobs]
        # The same errors for every replay of the same trace and seed.
        rng = random.Random(seed)
        self.eta_end = [
            j.duration * (1 + rng.uniform(-eta_error, eta_error)) for j in jobs
        ]  # from the start; made absolute at the start
        self.passes = 0

    # The replay ----------------------------------------------------------------

    def run(self) -> list[float]:
        events: list[tuple[float, int, int]] = [(j.submit, _SUBMIT, j.index) for j in self.jobs]
        heapq.heapify(events)
        while events:
            now = events[0][0]
            changed = False
            while events and events[0][0] == now:
                _, kind, i = heapq.heappop(events)
                if kind == _END:
                    self._release(i)
                    changed = True
                elif kind == _SUBMIT:
                    changed |= self._enqueue(i) < self.window
                else:
                    changed = True
            while changed and self.queue and self.total_free:
                self.passes += 1
                beyond = len(self.queue) > self.window
                started = self._pass(now)
                for i in started:
                    job = self.jobs[i]
                    self.start[i] = now
                    heapq.heappush(events, (now + job.duration, _END, i))
                    if self.policy == "ugro-eta":
                        self.eta_end[i] = min(now + self.eta_end[i], now + job.timeout)
                        heapq.heappush(events, (now + ETA_AFTER * job.duration, _ETA, i))
                # Jobs that came into the window as others started get a pass of
                # their own, as dispatch's next one (at the latest its beat tick,
                # 30 s later) gives them.
                changed = bool(started) and beyond
        return self.start

    def _enqueue(self, i: int) -> int:
        job = self.jobs[i]
        key = (job.duration if self.policy == "sjf-oracle" else 0.0, i)
        at = bisect.bisect(self.queue, key)
        self.queue.insert(at, key)
        return at

    def _pass(self, now: float) -> list[int]:
        """The jobs this pass starts (their GPUs taken)."""
        if self.policy in ("ugro", "ugro-eta"):
            started = self._ugro_pass(now)
        else:
            started = self._reference_pass(now, backfill=self.policy != "fifo")
        if started:
            gone = set(started)
            head = self.queue[: self.window]
            self.queue[: self.window] = [key for key in head if key[1] not in gone]
        return started

    def _take(self, i: int, node: str, gpus: list[int]) -> None:
        taken = set(gpus)
        self.free[node] = [g for g in self.free[node] if g not in taken]
        self.running[node][i] = len(gpus)
        self.held.setdefault(i, []).append((node, gpus))
        self.total_free -= len(gpus)

    def _release(self, i: int) -> None:
        for node, gpus in self.held.pop(i):
            self.free[node] = sorted(self.free[node] + gpus)
            del self.running[node][i]
            self.total_free += len(gpus)

    def _expected_end(self, i: int, now: float) -> float:
        """When the policy expects running job ``i`` to end (absolute)."""
        job = self.jobs[i]
        start = self.start[i]
        if self.policy == "sjf-oracle":
            return start + job.duration
        if self.policy == "ugro-eta" and now >= start + ETA_AFTER * job.duration:
            eta = self.eta_end[i]
            if eta > now:  # an ETA that has passed with the job still running is no guide
                return eta
        return start + job.timeout

    # ugro: its own placement function --------------------------------------------

    def _ugro_pass(self, now: float) -> list[int]:
        window = [self.pending[i] for _, i in self.queue[: self.window]]
        most_free = max(len(free) for free in self.free.values())
        if all(job.gpus > most_free for job in window):
            return []  # nothing fits anywhere: the pass would place nothing
        ends: dict[str, list[float | None]] = {}
        for node, run in self.running.items():
            left: list[float | None] = []
            for i, count in run.items():
                left += [self._expected_end(i, now) - now] * count
            ends[node] = left
        plans = plan_placements(window, self.free, self.capacity, ends)
        started: list[int] = []
        for plan in plans:
            i = int(plan.job_id)
            if not started or started[-1] != i:
                started.append(i)
            self._take(i, plan.node, list(plan.gpus))
        return started

    # The reference policies ------------------------------------------------------

    def _length(self, job: Job) -> float:
        """How long a policy takes a job to run at most."""
        return job.duration if self.policy == "sjf-oracle" else job.timeout

    def _reference_pass(self, now: float, backfill: bool) -> list[int]:
        free = {n: len(v) for n, v in self.free.items() if v}
        added: dict[str, list[float]] = {}  # the ends of the jobs this pass starts
        shadow: float | None = None  # when the reserved job starts
        spare: dict[str, int] = {}  # its nodes: GPUs free then beyond its need
        started: list[int] = []
        for _, i in self.queue[: self.window]:
            if not free:
                break
            job = self.jobs[i]
            end = now + self._length(job)
            before = shadow is not None and end <= shadow
            fits = [
                n
                for n, count in free.items()
                if count >= job.gpus and (before or spare.get(n, job.gpus) >= job.gpus)
            ]
            if len(fits) >= job.nodes:
                fits.sort(key=lambda n: (n in spare, free[n], n))
                for node in fits[: job.nodes]:
                    self._take(i, node, self.free[node][: job.gpus])
                    free[node] -= job.gpus
                    if not free[node]:
                        del free[node]
                    added.setdefault(node, []).extend([end] * job.gpus)
                    if node in spare and not before:
                        spare[node] -= job.gpus
                started.append(i)
            elif not backfill:
                break
            elif shadow is None:
                shadow, spare = self._reserve(job, now, free, added)
        return started

    def _reserve(
        self, job: Job, now: float, free: dict[str, int], added: dict[str, list[float]]
    ) -> tuple[float, dict[str, int]]:
        """EASY's reservation for ``job``: the nodes where it can start soonest,
        when it starts, and what each of them has spare then."""
        ends: dict[str, list[float]] = {}
        soonest: list[tuple[float, str]] = []
        for node, capacity in self.capacity.items():
            if capacity < job.gpus:
                continue
            node_ends = list(added.get(node, []))
            for i, count in self.running[node].items():
                node_ends += [self._expected_end(i, now)] * count
            node_ends.sort()
            ends[node] = node_ends
            missing = job.gpus - free.get(node, 0)
            soonest.append((node_ends[missing - 1] if missing > 0 else now, node))
        chosen = sorted(soonest)[: job.nodes]
        shadow = max(t for t, _ in chosen)
        spare = {
            node: free.get(node, 0) + sum(1 for e in ends[node] if e <= shadow) - job.gpus
            for _, node in chosen
        }
        return shadow, spare
