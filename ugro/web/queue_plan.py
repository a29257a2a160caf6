"""The queue as the placement policy will take it: which waiting jobs the next pass
places where, and which nodes a job that cannot start yet holds, from when. Pure.

This is ``plan_placements``' own pass (the same node index, the same ``fitting``,
``take`` and ``reserve_soonest``), run once more to say what it decided for each
job; it also goes on through a full cluster (a pass stops when no GPU is free,
as nothing more could be placed) so that the page shows the reservation the head
of the queue will hold. ``tests/integration/test_web_queue.py`` holds its
placements to ``plan_placements``' on random queues.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ugro.scheduling.placement import PendingJob, Placement, _Nodes


@dataclass(frozen=True)
class Held:
    """A node held for a job that cannot start yet: from when (s from now, at the
    earliest) it can start there."""

    node: str
    starts_in: float


@dataclass
class QueuePlan:
    placements: list[Placement] = field(default_factory=list)
    held: dict[str, list[Held]] = field(default_factory=dict)
    #: Jobs passed over for a quota (they hold nothing).
    over_quota: set[str] = field(default_factory=set)


def plan_queue(
    pending: Sequence[PendingJob],
    free: Mapping[str, Sequence[int]],
    capacity: Mapping[str, int],
    busy_ends: Mapping[str, Sequence[float | None]] | None = None,
    headroom: Mapping[str, int] | None = None,
) -> QueuePlan:
    """What the next pass would do with ``pending`` (in queue order): the arguments
    are ``plan_placements``'."""
    nodes = _Nodes(free, capacity, busy_ends or {})
    plan = QueuePlan()
    left = dict(headroom or {})
    for job in pending:
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
        before = set(nodes.reserved)
        nodes.reserve_soonest(job)
        taken = sorted(set(nodes.reserved) - before)
        if taken:
            plan.held[job.job_id] = [Held(n, nodes.reserved[n].shadow) for n in taken]
    return plan
