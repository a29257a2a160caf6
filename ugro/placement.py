"""Placement: which pending jobs go to which free GPUs now. Pure: data in, data out.

Jobs are taken in queue order (priority, then submission). A job goes to the node
where it fits most tightly (fewest free GPUs that still hold it), on that node's
lowest free indices, so large holes stay open for large jobs. A job that fits
nowhere yet reserves the node it can fit soonest: nothing later in the queue is
placed there, so a big job is not starved by a stream of small ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PendingJob:
    job_id: str
    gpus: int
    node: str | None = None


@dataclass(frozen=True)
class Placement:
    job_id: str
    node: str
    gpus: tuple[int, ...]


def plan_placements(
    pending: Sequence[PendingJob],
    free: Mapping[str, Sequence[int]],
    capacity: Mapping[str, int],
) -> list[Placement]:
    """Placements for ``pending`` given each node's free GPU indices and GPU count."""
    available = {node: sorted(indices) for node, indices in free.items()}
    reserved: set[str] = set()
    plans: list[Placement] = []
    for job in pending:
        if not any(available.get(n) for n in available if n not in reserved):
            break  # nothing left to hand out
        candidates = [n for n in available if n not in reserved and job.node in (None, n)]
        fits = [n for n in candidates if len(available[n]) >= job.gpus]
        if fits:
            node = min(fits, key=lambda n: (len(available[n]), n))
            taken = available[node][: job.gpus]
            available[node] = available[node][job.gpus :]
            plans.append(Placement(job.job_id, node, tuple(taken)))
            continue
        possible = [n for n in candidates if capacity.get(n, 0) >= job.gpus]
        if possible:
            reserved.add(max(possible, key=lambda n: (len(available[n]), n)))
    return plans
