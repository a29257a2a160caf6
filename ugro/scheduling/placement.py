"""Placement: which pending jobs go to which free GPUs now. Pure: data in, data out.

Jobs are taken in queue order (priority, then submission). A job goes to the node
where it fits most tightly (fewest free GPUs that still hold it; at a tie, the node
whose name sorts first), on that node's lowest free indices, so large holes stay
open for large jobs. (A GPU worker whose job ended takes the head of the queue
without a pass exactly where this rule puts it, ``ugro/live/lua/dispatch_enter.lua``;
``tests/integration/test_scheduling_equivalence.py`` holds the two together.)

A gang job (``nodes`` > 1) needs ``gpus`` GPUs on each of ``nodes`` distinct
nodes, all at once or not at all: it takes the tightest fitting nodes, one member
a node (``Placement.rank`` 0 on the first), and when it cannot start it reserves
the nodes where it can start soonest, as a one-node job reserves one.

A job that fits nowhere yet reserves the node where it can start soonest (EASY
backfill): a later, smaller job may still use that node's free GPUs only when it
cannot delay the reserved job, that is when its own timeout ends before the
reserved job's earliest start, or when it takes GPUs the reserved job will not
need then. A running job without a timeout may end at any moment, so it counts
as ending now: nothing is backfilled against it.

A running job's expected end (``expected_ends``: from its ETA, when the progress
scan has one) may come before its timeout. It moves the reservation: the node
where the reserved job can start soonest, and when, are reckoned by expected
ends. What a later job may take there is still reckoned by the timeouts: the
GPUs counted spare are those free by then at the latest, and a job backfilled by
its own timeout ends before the reservation's start. So an ETA that was too
optimistic delays the reserved job only by as long as the job it trusted runs
over, never by a job backfilled on its word.

A quota (``headroom``: how many more GPUs each of a job's accounts may hold) is
checked before anything else: a job over it is passed over, holding no
reservation, as it could not start whatever the GPUs did.

A pass keeps the nodes indexed (``_Nodes``) so that on a large, full cluster a
job costs little more than a look at the nodes with free GPUs:
``tests/unit/test_scheduling_placement.py`` holds it to a plain transcription of
the rules above on random inputs.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PendingJob:
    job_id: str
    gpus: int  # on each of its nodes
    node: str | None = None
    timeout: float | None = None  # seconds, when the job has one
    nodes: int = 1  # distinct nodes a gang job spans
    # The accounts whose quotas it counts against ("user:alice", "group:nlp").
    accounts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Placement:
    """One member of a job's placement: ``gpus`` of ``node``; a gang job has one a
    node, ranked in the order its nodes were chosen."""

    job_id: str
    node: str
    gpus: tuple[int, ...]
    rank: int = 0


@dataclass
class _Reservation:
    shadow: float  # earliest time (s from now) the reserved job can start
    spare: int  # GPUs free at that time beyond what the reserved job needs


@dataclass(frozen=True)
class Held:
    """A node held for a job that cannot start yet: from when (s from now, at the
    earliest) it is expected to start there."""

    node: str
    starts_in: float


@dataclass
class QueuePlan:
    """What a pass decides for each job: its placement, the nodes it holds, or
    nothing for a quota."""

    placements: list[Placement] = field(default_factory=list)
    held: dict[str, list[Held]] = field(default_factory=dict)
    #: Jobs passed over for a quota (they hold nothing).
    over_quota: set[str] = field(default_factory=set)


def plan_placements(
    pending: Sequence[PendingJob],
    free: Mapping[str, Sequence[int]],
    capacity: Mapping[str, int],
    busy_ends: Mapping[str, Sequence[float | None]] | None = None,
    headroom: Mapping[str, int] | None = None,
    expected_ends: Mapping[str, Sequence[float | None]] | None = None,
) -> list[Placement]:
    """Placements for ``pending``.

    Args:
        pending: jobs in queue order.
        free: each node's free GPU indices.
        capacity: each node's GPU count.
        busy_ends: for each node, when each busy GPU's job ends at the latest
            (seconds from now), None when it has no timeout.
        headroom: how many more GPUs an account may hold (its running quota less
            what it holds); an account not named has no quota.
        expected_ends: as ``busy_ends``, each busy GPU's job's expected end (its
            ETA's, no later than its timeout's; None: as ``busy_ends``).
    """
    return plan_queue(pending, free, capacity, busy_ends, headroom, expected_ends).placements


def plan_queue(
    pending: Sequence[PendingJob],
    free: Mapping[str, Sequence[int]],
    capacity: Mapping[str, int],
    busy_ends: Mapping[str, Sequence[float | None]] | None = None,
    headroom: Mapping[str, int] | None = None,
    expected_ends: Mapping[str, Sequence[float | None]] | None = None,
    whole_queue: bool = False,
) -> QueuePlan:
    """``plan_placements``, saying also what it decided for each job that does not
    start; with ``whole_queue`` it goes on through a full cluster (a pass stops
    when no GPU is free, as nothing more could be placed), for the reservations
    the queue will hold (the web dashboard's queue page)."""
    nodes = _Nodes(free, capacity, busy_ends or {}, expected_ends)
    plan = QueuePlan()
    left = dict(headroom or {})
    for job in pending:
        if not nodes.free_gpus and not whole_queue:
            break
        need = job.gpus * job.nodes
        if any(left.get(account, need) < need for account in job.accounts):
            plan.over_quota.add(job.job_id)
            continue
        choice = nodes.fitting(job) if nodes.free_gpus else []
        if len(choice) >= job.nodes:
            for rank, node in enumerate(choice[: job.nodes]):
                plan.placements.append(Placement(job.job_id, node, nodes.take(node, job), rank))
            for account in job.accounts:
                if account in left:
                    left[account] -= need
            continue
        if held := nodes.reserve_soonest(job):
            plan.held[job.job_id] = [Held(n, nodes.reserved[n].shadow) for n in held]
    return plan


def _end(end: float | None) -> float:
    """A busy GPU's end as a reservation counts it: without a timeout, now."""
    return 0.0 if end is None else max(0.0, end)


class _Nodes:
    """The nodes as one pass changes them: free GPUs, busy GPUs' ends, reservations.

    Indexed so that a pass over a large, full cluster stays cheap: the open
    (unreserved) nodes with free GPUs by how many they have, the reserved ones that
    have any, each node's ends sorted once (on first need) and kept sorted, and for
    each GPU count a job asked for, a heap of the open nodes by when that many could
    be free on them (stale entries are skipped on the way out).
    """

    def __init__(
        self,
        free: Mapping[str, Sequence[int]],
        capacity: Mapping[str, int],
        busy_ends: Mapping[str, Sequence[float | None]],
        expected_ends: Mapping[str, Sequence[float | None]] | None = None,
    ) -> None:
        self.available = {node: sorted(indices) for node, indices in free.items()}
        self.capacity = capacity
        self.busy_ends = busy_ends
        self.expected_ends = expected_ends
        self.expected: dict[str, list[float]] = {}  # (only with expected_ends)
        self.free_gpus = sum(map(len, self.available.values()))
        self.reserved: dict[str, _Reservation] = {}
        self.open_by_free: dict[int, list[str]] = {}  # names in order
        for node in sorted(self.available):
            if self.available[node]:
                self.open_by_free.setdefault(len(self.available[node]), []).append(node)
        self.reserved_with_free: set[str] = set()
        self.ends: dict[str, list[float]] = {}
        # need -> heap of (when ``need`` GPUs can be free on the node, node, version)
        self.soonest: dict[int, list[tuple[float, str, int]]] = {}
        self.version: dict[str, int] = {}  # bumped when a node's GPUs are taken

    def fitting(self, job: PendingJob) -> list[str]:
        """The nodes ``job`` may take now, best first: open nodes by tightest fit
        (fewest free GPUs, then name), then reserved ones it cannot delay, those
        only for a gang or when no open node holds it."""
        if job.node is None and job.gpus >= 1:
            open_fits: list[str] = []
            for count in sorted(self.open_by_free):
                if count >= job.gpus:
                    open_fits += self.open_by_free[count]
                    if len(open_fits) >= job.nodes:
                        return open_fits
            reserved: Iterable[str] = self.reserved_with_free
        else:  # pinned (one node to look at), or asking no GPUs (every node holds it)
            candidates = [n for n in self.available if job.node in (None, n)]
            open_fits = sorted(
                (
                    n
                    for n in candidates
                    if n not in self.reserved and len(self.available[n]) >= job.gpus
                ),
                key=self._tightness,
            )
            if len(open_fits) >= job.nodes or (job.nodes == 1 and open_fits):
                return open_fits
            reserved = [n for n in candidates if n in self.reserved]
        backfill = (
            n
            for n in reserved
            if len(self.available[n]) >= job.gpus and _can_backfill(job, self.reserved[n])
        )
        return open_fits + sorted(backfill, key=self._tightness)

    def _tightness(self, node: str) -> tuple[int, str]:
        return len(self.available[node]), node

    def take(self, node: str, job: PendingJob) -> tuple[int, ...]:
        """Take ``job``'s GPUs on ``node``: its lowest free indices."""
        indices = self.available[node]
        taken = tuple(indices[: job.gpus])
        self.available[node] = rest = indices[job.gpus :]
        self.free_gpus -= len(indices) - len(rest)
        if node in self.reserved:
            if not rest:
                self.reserved_with_free.discard(node)
            if not _fits_before(job, self.reserved[node]):
                self.reserved[node].spare -= job.gpus
        else:
            self._unlist(node, len(indices))
            if rest:
                bisect.insort(self.open_by_free.setdefault(len(rest), []), node)
        for ends in (
            self._ends_of(node),
            *([self._expected_of(node)] if self.expected_ends else []),
        ):
            for _ in range(job.gpus):
                bisect.insort(ends, _end(job.timeout))  # (its expected end: its timeout)
        self.version[node] = version = self.version.get(node, 0) + 1
        if node not in self.reserved:
            for need, heap in self.soonest.items():
                if self.capacity.get(node, 0) >= need:
                    heapq.heappush(heap, (self._shadow(node, need), node, version))
        return taken

    def reserve_soonest(self, job: PendingJob) -> list[str]:
        """Reserve for ``job``, which cannot start now, the open nodes where it can
        start soonest (at a tie, the name first), each held until its last one can
        start it; none when too few open nodes could ever hold it. Returns the
        nodes held."""
        if job.node is not None:
            node = job.node
            possible = (
                node in self.available
                and node not in self.reserved
                and self.capacity.get(node, 0) >= job.gpus
            )
            if possible and job.nodes <= 1:
                self._hold(node, job.gpus, self._shadow(node, job.gpus))
                return [node]
            return []
        heap = self.soonest.get(job.gpus)
        if heap is None:
            heap = [
                (self._shadow(node, job.gpus), node, self.version.get(node, 0))
                for node in self.available
                if node not in self.reserved and self.capacity.get(node, 0) >= job.gpus
            ]
            heapq.heapify(heap)
            self.soonest[job.gpus] = heap
        chosen: list[tuple[float, str, int]] = []
        while heap and len(chosen) < job.nodes:
            entry = heapq.heappop(heap)
            _, node, version = entry
            if node not in self.reserved and version == self.version.get(node, 0):
                chosen.append(entry)
        if len(chosen) < job.nodes:
            for entry in chosen:
                heapq.heappush(heap, entry)
            return []
        # A gang starts when its last node can: each of its nodes is held till then.
        shadow = max(when for when, _, _ in chosen)
        for _, node, _ in chosen:
            self._hold(node, job.gpus, shadow)
        return [node for _, node, _ in chosen]

    def _ends_of(self, node: str) -> list[float]:
        ends = self.ends.get(node)
        if ends is None:
            ends = self.ends[node] = sorted(map(_end, self.busy_ends.get(node, ())))
        return ends

    def _expected_of(self, node: str) -> list[float]:
        assert self.expected_ends is not None
        ends = self.expected.get(node)
        if ends is None:
            ends = self.expected[node] = sorted(map(_end, self.expected_ends.get(node, ())))
        return ends

    def _shadow(self, node: str, need: int) -> float:
        """When ``need`` GPUs are expected free on ``node`` at the earliest (s from
        now)."""
        ends = self._expected_of(node) if self.expected_ends else self._ends_of(node)
        missing = need - len(self.available[node])
        return ends[missing - 1] if 0 < missing <= len(ends) else 0.0

    def _hold(self, node: str, need: int, shadow: float) -> None:
        """Reserve ``node`` for a job of ``need`` GPUs there that starts at ``shadow``:
        the GPUs free by then at the latest beyond its need are spare."""
        free_now = len(self.available[node])
        free_then = free_now + bisect.bisect_right(self._ends_of(node), shadow)
        self.reserved[node] = _Reservation(shadow, free_then - need)
        if free_now:
            self._unlist(node, free_now)
            self.reserved_with_free.add(node)

    def _unlist(self, node: str, count: int) -> None:
        """Drop an open node from the index of open nodes by free GPUs."""
        if count < 1:
            return
        listed = self.open_by_free[count]
        del listed[bisect.bisect_left(listed, node)]
        if not listed:
            del self.open_by_free[count]


def _fits_before(job: PendingJob, reservation: _Reservation) -> bool:
    return job.timeout is not None and job.timeout <= reservation.shadow


def _can_backfill(job: PendingJob, reservation: _Reservation) -> bool:
    return _fits_before(job, reservation) or job.gpus <= reservation.spare
