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

A quota (``headroom``: how many more GPUs each of a job's accounts may hold) is
checked before anything else: a job over it is passed over, holding no
reservation, as it could not start whatever the GPUs did.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


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


def _reserve(need: int, free_now: int, busy_ends: Sequence[float | None]) -> _Reservation:
    ends = sorted(0.0 if end is None else max(0.0, end) for end in busy_ends)
    missing = need - free_now
    shadow = ends[missing - 1] if 0 < missing <= len(ends) else 0.0
    free_then = free_now + sum(1 for end in ends if end <= shadow)
    return _Reservation(shadow, free_then - need)


def plan_placements(
    pending: Sequence[PendingJob],
    free: Mapping[str, Sequence[int]],
    capacity: Mapping[str, int],
    busy_ends: Mapping[str, Sequence[float | None]] | None = None,
    headroom: Mapping[str, int] | None = None,
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
    """
    available = {node: sorted(indices) for node, indices in free.items()}
    ends = {node: list((busy_ends or {}).get(node, [])) for node in available}
    reserved: dict[str, _Reservation] = {}
    plans: list[Placement] = []
    left = dict(headroom or {})
    for job in pending:
        if not any(available.values()):
            break
        need = job.gpus * job.nodes
        if any(left.get(account, need) < need for account in job.accounts):
            continue
        candidates = [n for n in available if job.node in (None, n)]
        fits = [n for n in candidates if len(available[n]) >= job.gpus]
        open_fits = [n for n in fits if n not in reserved]
        backfill = [n for n in fits if n in reserved and _can_backfill(job, reserved[n])]
        # A one-node job may take a reserved node it cannot delay; a gang, the
        # open nodes first, then such reserved ones.
        choice = sorted(open_fits, key=lambda n: (len(available[n]), n))
        choice += sorted(backfill, key=lambda n: (len(available[n]), n))
        if job.nodes == 1 and open_fits:
            choice = choice[: len(open_fits)]
        if len(choice) >= job.nodes:
            for rank, node in enumerate(choice[: job.nodes]):
                taken = available[node][: job.gpus]
                available[node] = available[node][job.gpus :]
                ends[node] += [job.timeout] * job.gpus
                if node in reserved and not _fits_before(job, reserved[node]):
                    reserved[node].spare -= job.gpus
                plans.append(Placement(job.job_id, node, tuple(taken), rank))
            for account in job.accounts:
                if account in left:
                    left[account] -= need
            continue
        possible = [n for n in candidates if n not in reserved and capacity.get(n, 0) >= job.gpus]
        if len(possible) >= job.nodes:
            soonest = sorted(
                possible,
                key=lambda n: (_reserve(job.gpus, len(available[n]), ends[n]).shadow, n),
            )[: job.nodes]
            # A gang starts when its last node can: each of its nodes is held till then.
            shadow = max(_reserve(job.gpus, len(available[n]), ends[n]).shadow for n in soonest)
            for node in soonest:
                reserved[node] = _reserve_until(job.gpus, len(available[node]), ends[node], shadow)
    return plans


def _reserve_until(
    need: int, free_now: int, busy_ends: Sequence[float | None], shadow: float
) -> _Reservation:
    """``_reserve``, held until ``shadow`` (a gang's start, which may be later than
    this node's own): the GPUs freed by then count as spare."""
    own = _reserve(need, free_now, busy_ends)
    if shadow <= own.shadow:
        return own
    ends = [0.0 if end is None else max(0.0, end) for end in busy_ends]
    free_then = free_now + sum(1 for end in ends if end <= shadow)
    return _Reservation(shadow, free_then - need)


def _fits_before(job: PendingJob, reservation: _Reservation) -> bool:
    return job.timeout is not None and job.timeout <= reservation.shadow


def _can_backfill(job: PendingJob, reservation: _Reservation) -> bool:
    return _fits_before(job, reservation) or job.gpus <= reservation.spare
