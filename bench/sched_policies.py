"""The discrete-event replay behind ``python -m bench.sched``: one policy, one trace.

Events are job submissions and job ends (a preempted job's stop among them),
beat's dispatch ticks (every ``dispatch_interval``, 30 s, while jobs wait) and,
for the policies with ETAs, the moment a running job's ETA becomes known.

- ``ugro`` is what ugro does, through its own code: each pass is dispatch's
  ``plan_on`` (which calls ``plan_placements``) on the free GPUs, the busy GPUs'
  jobs and their time left by their timeouts, first on the 8 jobs at the head of
  the queue, then on the first ``window`` (64) when those would leave GPUs free,
  as ``_dispatch_pass`` does. A pass runs at a submission, at a job's end and at
  a tick, as dispatch's are asked for; one that would see what the last pass saw,
  when that one placed nothing, is skipped (it would place nothing either: only
  the busy GPUs' time left has shrunk, which lets fewer jobs backfill). At each
  tick fair share ranks the queue first, as beat's ``rank_queue`` does:
  ``fair_order`` on each user's ``decayed_usage`` (``fair_share_half_life``, 7
  days), the trace's ``user`` column as the user (jobs without one count as the
  user "", as ``rank_queue`` counts them); a job submitted since waits at the end
  of the queue until the next tick. (Where a GPU worker whose job ended takes the
  head of the queue without a pass, the replay runs the pass, which places the
  same job there first.)
- ``ugro-fifo``: the same without fair share, the queue in submission order.
- ``ugro-eta``: ``ugro`` with ``UGRO_RESERVE_BY_ETA``: each running job's expected
  end from an ETA once known (after ``ETA_AFTER`` of the job's run; the true end
  with an error of up to +/- ``eta_error`` of its duration), else, and once an
  ETA has passed with the job still running, its timeout; its latest end is its
  timeout still (``plan_placements``' ``expected_ends``).
- ``ugro-short``: ``ugro`` with ``order = "shortest-first"`` in the cluster
  file's ``[sharing]``: beat's ranking puts the shorter declared lengths first
  (``shortest_first``: classes doubling from an hour), fair share ordering each
  class, and a job queued over ``starvation_hours`` (48) before them all.
- ``ugro-short-eta``: ``ugro-short`` with ``UGRO_RESERVE_BY_ETA``, as ``ugro-eta``.
- ``ugro-preempt``: ``ugro-short`` with ``[sharing.preemption]`` at its defaults:
  at each tick, after its pass, beat's ``preempt_waiting``: the first job of the
  window that may preempt (``PreemptionPolicy.may_preempt``) and finds victims
  (``victims_for``, among the jobs ``--preemptible``: a share ``preemptible`` of
  them at random) stops them, and heads the queue, its victims behind it
  (``front_of_queue``). A victim's GPUs free after ``stop_grace`` (its end and
  latest end then, for the reservations meanwhile); it is queued again with what
  it had left to run and ``restart_cost`` more. One preemption at a time: the
  next may begin once its job started, or the grace and a tick passed.
- ``fifo``: strict first come first served, the head blocks everything behind it.
- ``fifo-backfill``: EASY backfill on the timeouts: the first job that does not
  fit reserves the nodes where it can start soonest, and a later job may start
  only if it cannot delay that reservation.
- ``sjf-declared``: the queue ordered by declared timeout (shortest first, then
  submission), EASY backfill on the timeouts: what the users' own word is worth
  to a scheduler that orders by it alone, without fair share or a starvation bound.
- ``sjf-oracle``: the queue ordered by true duration, EASY backfill on true
  durations.

The reference policies place a job on the node with the fewest free GPUs that
holds it (a gang: the N such nodes, one member each), as ugro does. They plan
on the first ``window`` waiting jobs at each submission or end, and again at once
while a pass started jobs and brought others into the window.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from bench.usage_ledger import UsageLedger
from ugro.live.dispatch_state import PendingEntry
from ugro.scheduling.fair_share import (
    Queued,
    fair_order,
    front_of_queue,
    job_cost,
    shortest_first,
)
from ugro.scheduling.placement import PendingJob, Placement
from ugro.scheduling.planning import GpuView, plan_on
from ugro.scheduling.preemption import NodeGpus, Preemptible, victims_for
from ugro.scheduling.sharing import PreemptionPolicy, SharingPolicy
from ugro.settings import Settings

UGRO_POLICIES = (
    "ugro",
    "ugro-fifo",
    "ugro-eta",
    "ugro-short",
    "ugro-short-eta",
    "ugro-preempt",
)
POLICIES = (*UGRO_POLICIES, "fifo", "fifo-backfill", "sjf-declared", "sjf-oracle")
FAIR_SHARE_POLICIES = ("ugro", "ugro-eta", "ugro-short", "ugro-short-eta", "ugro-preempt")
ETA_POLICIES = ("ugro-eta", "ugro-short-eta")  # with UGRO_RESERVE_BY_ETA
# order = "shortest-first"
SHORTEST_FIRST_POLICIES = ("ugro-short", "ugro-short-eta", "ugro-preempt")
# [sharing.preemption] with its defaults, on the jobs --preemptible
PREEMPT_POLICIES = ("ugro-preempt",)
PREEMPTION = PreemptionPolicy()
# What a stopped job's worker gives it before SIGKILL: its GPUs are free then.
STOP_GRACE = float(Settings.model_fields["stop_grace"].default)
# How much longer a preempted job runs in all (s): its process's start and its
# checkpoint's load again, and the work since its last checkpoint.
RESTART_COST = 300.0
HEAD = 8  # as dispatch's _HEAD: the jobs a pass plans on first
WINDOW = 64  # as dispatch's _WINDOW: the most waiting jobs a pass plans on
ETA_AFTER = 0.1  # the share of a job's run after which its ETA is known
TICK = float(Settings.model_fields["dispatch_interval"].default)
HALF_LIFE = float(Settings.model_fields["fair_share_half_life"].default)
# ugro-short: a job queued longer than this (s) goes first
STARVATION_BOUND = SharingPolicy.model_fields["starvation_hours"].default * 3600.0

# At one instant: ends free GPUs before submits look, and a tick ranks them all.
_END, _SUBMIT, _ETA, _TICK = 0, 1, 2, 3


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
    first start time, ``waits`` the time each spent not running between its
    submit and its end (with preemption, the wait of each stint, and what its
    restarts cost)."""

    def __init__(
        self,
        jobs: Sequence[Job],
        nodes: int,
        gpus_per_node: int,
        policy: str,
        window: int = WINDOW,
        eta_error: float = 0.2,
        seed: int = 0,
        tick: float = TICK,
        half_life: float = HALF_LIFE,
        restart_cost: float = RESTART_COST,
        preemptible: float = 1.0,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}: one of {', '.join(POLICIES)}")
        self.jobs = jobs
        self.policy = policy
        self.window = window
        self.tick = tick
        width = len(str(nodes - 1))
        names = [f"n{i:0{width}d}" for i in range(nodes)]
        self.free: dict[str, list[int]] = {n: list(range(gpus_per_node)) for n in names}
        self.capacity = dict.fromkeys(names, gpus_per_node)
        self.running: dict[str, dict[int, int]] = {n: {} for n in names}  # job -> its GPUs
        self.view = GpuView(self.free, self.capacity, {n: {} for n in names})
        self.total_free = nodes * gpus_per_node
        self.held: dict[int, list[tuple[str, list[int]]]] = {}
        self.start = [math.nan] * len(jobs)  # the first
        self.attempt_start = [math.nan] * len(jobs)  # the last
        self.left = [j.duration for j in jobs]  # run time still to go
        self.ends_at = [math.nan] * len(jobs)  # of the running attempt
        self.finished = [math.nan] * len(jobs)
        self.preempts = policy in PREEMPT_POLICIES
        self.restart_cost = restart_cost
        self.preempting: list[int] = []  # a job that stopped others, till it starts
        self.stopping: set[int] = set()  # jobs stopped, in their grace
        self.preempted: list[int] = []  # jobs stopped, queued again till they start
        self.preemptions = 0
        self.preempt_until = 0.0  # when the one under way no longer holds back another
        self.queue: list[tuple[float, int]] = []  # (order key, job index), sorted
        self.entries = [PendingEntry(str(j.index), j.gpus, None, j.timeout, j.nodes) for j in jobs]
        self.fair_share = policy in FAIR_SHARE_POLICIES
        self.queued = [
            Queued(str(j.index), j.user, job_cost(j.gpus, j.nodes, j.timeout)) for j in jobs
        ]
        self.usage = UsageLedger(half_life)
        self.tick_due: float | None = None
        self.idle = False  # the last pass placed nothing, and nothing changed since
        # The same errors for every replay of the same trace and seed.
        rng = random.Random(seed)
        self.eta_end = [
            j.duration * (1 + rng.uniform(-eta_error, eta_error)) for j in jobs
        ]  # from the start; made absolute at the start
        # ugro-preempt: the jobs submitted --preemptible, a share of them at random
        choose = random.Random(seed + 1)
        self.preemptible = [choose.random() < preemptible for _ in jobs]
        self.stops: Counter[int] = Counter()  # each preempted job's stops
        self.passes = 0
        self.ranks = 0

    # The replay ----------------------------------------------------------------

    def run(self) -> list[float]:
        events: list[tuple[float, int, int]] = [(j.submit, _SUBMIT, j.index) for j in self.jobs]
        heapq.heapify(events)
        ugro = self.policy in UGRO_POLICIES
        while events:
            now = events[0][0]
            changed = False
            ticked = False
            while events and events[0][0] == now:
                _, kind, i = heapq.heappop(events)
                if kind == _END:
                    if now != self.ends_at[i]:
                        continue  # the end of an attempt that was stopped before it
                    self.ends_at[i] = math.nan  # (its end is handled once)
                    self._release(i, now)
                    if i in self.stopping:
                        self._requeue(i)
                    else:
                        self.finished[i] = now
                    changed = True
                elif kind == _SUBMIT:
                    changed |= self._enqueue(i) < self.window
                elif kind == _ETA:
                    changed = True
                else:
                    self.tick_due = None
                    ticked = True
                    changed |= self._rank(now)
            if ugro:
                # Every event asks dispatch for a pass.
                if (changed or not self.idle) and self.queue and self.total_free:
                    self.idle = not self._run_pass(now, events)
                if ticked and self.preempts and self.queue:
                    self._preempt(now, events)  # beat's look, after its pass
                if self.queue and self.tick_due is None:
                    self.tick_due = (math.floor(now / self.tick) + 1) * self.tick
                    heapq.heappush(events, (self.tick_due, _TICK, -1))
                continue
            while changed and self.queue and self.total_free:
                beyond = len(self.queue) > self.window
                started = self._run_pass(now, events)
                # Jobs that came into the window as others started get a pass of
                # their own.
                changed = bool(started) and beyond
        return self.start

    def waits(self) -> list[float]:
        """Each job's time not running between its submit and its end (s)."""
        return [self.finished[j.index] - j.submit - j.duration for j in self.jobs]

    def _run_pass(self, now: float, events: list[tuple[float, int, int]]) -> list[int]:
        self.passes += 1
        started = self._pass(now)
        for i in started:
            job = self.jobs[i]
            if math.isnan(self.start[i]):
                self.start[i] = now
            self.attempt_start[i] = now
            self.ends_at[i] = now + self.left[i]
            self.usage.start(i, job.user, job.total_gpus, now)
            heapq.heappush(events, (self.ends_at[i], _END, i))
            if self.policy in ETA_POLICIES:
                known = now + ETA_AFTER * job.duration
                self.eta_end[i] = eta = min(now + self.eta_end[i], now + job.timeout)
                heapq.heappush(events, (known, _ETA, i))
                if known < eta < now + job.duration:
                    heapq.heappush(events, (eta, _ETA, i))  # passed: the timeout again
        if self.preempts:
            gone = set(started)
            self.preempting = [i for i in self.preempting if i not in gone]
            self.preempted = [i for i in self.preempted if i not in gone]
        return started

    # Preemption ----------------------------------------------------------------

    def _preempt(self, now: float, events: list[tuple[float, int, int]]) -> None:
        """Beat's ``preempt_waiting``: the first job of the window that may preempt
        and finds victims stops them; it heads the queue till it starts."""
        if self.preempting and now < self.preempt_until:
            return  # one under way
        usage: dict[str, float] | None = None
        for _, i in self.queue[: self.window]:
            job = self.jobs[i]
            if not PREEMPTION.may_preempt(job.timeout, now - job.submit):
                continue
            if usage is None:
                usage = self.usage.at_time(now)
                nodes = {
                    name: NodeGpus(len(self.free[name]), capacity, self.view.held[name])
                    for name, capacity in self.capacity.items()
                }
                running = {
                    str(r): Preemptible(
                        str(r), self.jobs[r].user, now - self.attempt_start[r], self.stops[r]
                    )
                    for r in self.held
                    if self.preemptible[r]
                }
            waiting = PendingJob(str(i), job.gpus, None, job.timeout, job.nodes)
            victims = victims_for(waiting, job.user, nodes, running, usage, {}, PREEMPTION)
            if victims is None:
                continue
            self.preemptions += 1
            self.preempting = [i]
            self.preempt_until = now + STOP_GRACE + self.tick
            for victim in map(int, victims):
                if self.ends_at[victim] <= now + STOP_GRACE:
                    continue  # it ends within the grace anyway
                self.stopping.add(victim)
                self.left[victim] -= now - self.attempt_start[victim]
                self.left[victim] += self.restart_cost
                self.ends_at[victim] = now + STOP_GRACE
                heapq.heappush(events, (self.ends_at[victim], _END, victim))
            self._to_front()
            return

    def _requeue(self, i: int) -> None:
        """A stopped job back in the queue, behind the job that stopped it."""
        self.stopping.discard(i)
        self.stops[i] += 1
        self.preempted.append(i)
        self._enqueue(i)
        self._to_front()

    def _to_front(self) -> None:
        first, then = list(map(str, self.preempting)), list(map(str, self.preempted))
        order = front_of_queue([str(i) for _, i in self.queue], first, then)
        keys = sorted(key for key, _ in self.queue)
        self.queue = [(key, int(job)) for key, job in zip(keys, order, strict=True)]

    def _enqueue(self, i: int) -> int:
        job = self.jobs[i]
        key = (self._order_key(job), i)
        at = bisect.bisect(self.queue, key)
        self.queue.insert(at, key)
        return at

    def _order_key(self, job: Job) -> float:
        """Where a job joins the queue: by true duration for the oracle, by declared
        timeout for ``sjf-declared``, else in submission order."""
        if self.policy == "sjf-oracle":
            return job.duration
        if self.policy == "sjf-declared":
            return job.timeout
        return float(job.index)

    def _rank(self, now: float) -> bool:
        """Beat's ``rank_queue``: the queue in fair share order, each job taking a
        place (an order key) among those the queue had. Whether the window changed."""
        if not self.fair_share or len(self.queue) < 2:
            return False
        self.ranks += 1
        usage = self.usage.at_time(now)
        queued = [self.queued[i] for _, i in self.queue]
        order = fair_order(queued, usage, {})
        if self.policy in SHORTEST_FIRST_POLICIES:
            waiting = [self.jobs[i] for _, i in self.queue]
            timeouts: dict[str, float | None] = {str(j.index): j.timeout for j in waiting}
            waited = {str(j.index): now - j.submit for j in waiting}
            order = shortest_first(order, timeouts, waited, STARVATION_BOUND)
        if self.preempts:
            order = front_of_queue(
                order, list(map(str, self.preempting)), list(map(str, self.preempted))
            )
        head = [i for _, i in self.queue[: self.window]]
        self.queue = [(key, int(job)) for (key, _), job in zip(self.queue, order, strict=True)]
        return head != [i for _, i in self.queue[: self.window]]

    def _pass(self, now: float) -> list[int]:
        """The jobs this pass starts (their GPUs taken)."""
        if self.policy in UGRO_POLICIES:
            started = self._ugro_pass(now)
        else:
            started = self._reference_pass(now, backfill=self.policy != "fifo")
        if started:
            gone = set(started)
            head = self.queue[: self.window]
            self.queue[: self.window] = [key for key in head if key[1] not in gone]
        return started

    def _take(self, i: int, node: str, gpus: Sequence[int]) -> None:
        taken = set(gpus)
        self.free[node] = [g for g in self.free[node] if g not in taken]
        self.running[node][i] = len(gpus)
        held = self.view.held[node]
        for index in gpus:
            held[index] = str(i)
        self.held.setdefault(i, []).append((node, list(gpus)))
        self.total_free -= len(gpus)

    def _release(self, i: int, now: float) -> None:
        job = self.jobs[i]
        self.usage.end(i, job.user, job.total_gpus, self.attempt_start[i], now)
        for node, gpus in self.held.pop(i):
            self.free[node] = sorted(self.free[node] + gpus)
            del self.running[node][i]
            held = self.view.held[node]
            for index in gpus:
                del held[index]
            self.total_free += len(gpus)

    def _expected_end(self, i: int, now: float) -> float:
        """When the policy expects running job ``i`` to end (absolute)."""
        job = self.jobs[i]
        start = self.attempt_start[i]
        if i in self.stopping:
            return self.ends_at[i]
        if self.policy == "sjf-oracle":
            return start + job.duration
        if self.policy in ETA_POLICIES and now >= start + ETA_AFTER * job.duration:
            eta = self.eta_end[i]
            if eta > now:  # an ETA that has passed with the job still running is no guide
                return eta
        return start + job.timeout

    # ugro: its own dispatch pass ---------------------------------------------------

    def _ugro_pass(self, now: float) -> list[int]:
        plans: list[Placement] = []
        limits = (HEAD, self.window) if self.window > HEAD else (self.window,)
        for limit in limits:
            head = [self.entries[i] for _, i in self.queue[:limit]]
            plans = self._plan(head, now)
            left_free = self.total_free - sum(len(p.gpus) for p in plans)
            if limit == HEAD and len(head) == limit and left_free > 0:
                continue  # dispatch reads the whole window and plans on it anew
            break
        started: list[int] = []
        for plan in plans:
            i = int(plan.job_id)
            if not started or started[-1] != i:
                started.append(i)
            self._take(i, plan.node, plan.gpus)
        return started

    def _plan(self, head: list[PendingEntry], now: float) -> list[Placement]:
        most_free = max(map(len, self.free.values()))
        if all(entry.gpus > most_free for entry in head):
            return []  # nothing fits anywhere: plan_on would place nothing

        def latest(jobs: list[str]) -> dict[str, float | None]:
            return {j: self._latest_end(int(j)) - now for j in jobs}

        def expected(jobs: list[str]) -> dict[str, float | None]:
            return {j: self._expected_end(int(j), now) - now for j in jobs}

        eta = self.policy in ETA_POLICIES
        return plan_on(self.view, head, latest, expected_left=expected if eta else None)

    def _latest_end(self, i: int) -> float:
        """When running job ``i`` ends at the latest: its timeout's, or its grace's."""
        if i in self.stopping:
            return self.ends_at[i]
        return self.attempt_start[i] + self.jobs[i].timeout

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
            node: free.get(node, 0) + sum(1 for end in ends[node] if end <= shadow) - job.gpus
            for _, node in chosen
        }
        return shadow, spare
