"""What a dispatch pass sees of the cluster's GPUs (``GpuView``) and what it
places on them (``plan_on``): ``plan_placements`` on the live view, asking the
running jobs' ends only when a reservation needs them. Shared by dispatch, a
submit that places its job at once, ``ugro status`` and the scheduling simulator
(``bench.sched``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ugro.live.dispatch_state import PendingEntry
from ugro.live.worker_info import WorkerInfo
from ugro.runtime import Runtime
from ugro.scheduling.placement import PendingJob, Placement, plan_placements
from ugro.scheduling.sharing import QuotaView


@dataclass
class GpuView:
    """What dispatch sees of the cluster's GPUs in one pass."""

    free: dict[str, list[int]] = field(default_factory=dict)
    capacity: dict[str, int] = field(default_factory=dict)
    # node -> index -> the job holding its lease
    held: dict[str, dict[int, str]] = field(default_factory=dict)
    # node -> index -> why another program keeps it busy
    blocked: dict[str, dict[int, str]] = field(default_factory=dict)


def gpu_view(rt: Runtime) -> GpuView:
    """Live GPUs by node: free, held by a job, or blocked by another program."""
    workers, holders, _ = rt.live.dispatch.snapshot(rt.settings.worker_ttl, limit=0)
    return view_of(workers, holders, rt.registry.held_gpus())


def view_of(
    workers: list[WorkerInfo],
    holders: dict[tuple[str, int], str | None],
    in_registry: dict[str, dict[int, str]],
) -> GpuView:
    """A GPU is held when its lease is taken in Redis or when the registry says a
    placed or running job has it (``in_registry``, ``Registry.held_gpus``): after
    Redis was wiped, a running job's worker takes its lease again at its next
    heartbeat, and until then the registry keeps its GPUs from being handed out
    twice."""
    view = GpuView()
    for worker in workers:
        node, index = worker.node, worker.index
        view.capacity[node] = view.capacity.get(node, 0) + 1
        held = view.held.setdefault(node, {})
        holder = holders.get((node, index))
        if holder is not None:
            held[index] = holder.partition("|")[0]
        elif index in in_registry.get(node, {}):
            held[index] = in_registry[node][index]
        if worker.blocked:
            view.blocked.setdefault(node, {})[index] = worker.blocked
        free = view.free.setdefault(node, [])
        if index not in held and not worker.blocked:
            free.append(index)
    return view


def plan_on(
    view: GpuView,
    pending: Sequence[PendingEntry],
    time_left: Callable[[list[str]], dict[str, float | None]],
    quotas: QuotaView | None = None,
    expected_left: Callable[[list[str]], dict[str, float | None]] | None = None,
) -> list[Placement]:
    """What a pass places: ``plan_placements`` on the free GPUs of ``view`` for the
    ``pending`` jobs, in queue order. ``time_left`` says how long each of some
    running jobs may still run (seconds, None: unknown), and ``expected_left`` how
    long each is expected to (from its ETA); they are asked only when a job waits
    while GPUs stay free (its reservation, and what may be backfilled around it,
    need them). ``quotas``: the GPU quotas, when some user or group has one."""
    if not pending or not any(view.free.values()):
        return []
    accounts = quotas.accounts if quotas is not None else {}
    jobs = [
        PendingJob(e.job_id, e.gpus, e.node, e.timeout, e.nodes, accounts.get(e.job_id, ()))
        for e in pending
    ]
    headroom = quotas.headroom if quotas is not None else None
    plans = plan_placements(jobs, view.free, view.capacity, None, headroom)
    placed = {p.job_id for p in plans}
    if len(placed) == len(jobs):
        return plans  # (every job placed: no reservation was made, no end was needed)
    # Without the ends, a job that cannot start reserves nodes blindly (every busy
    # GPU counted free at once): what is placed after it went around that blind
    # reservation, not the one the ends make, and what waits might have been
    # backfilled around the real one. So the plan stands only when it took every
    # free GPU for a head of the queue, no job before a placed one left waiting.
    free_left = sum(map(len, view.free.values())) - sum(len(p.gpus) for p in plans)
    if free_left == 0 and _placed_a_head(jobs, placed):
        return plans
    held = sorted({job for by_index in view.held.values() for job in by_index.values()})

    def on_nodes(left: dict[str, float | None]) -> dict[str, list[float | None]]:
        return {
            node: [left.get(j) for j in by_index.values()] for node, by_index in view.held.items()
        }

    ends = on_nodes(time_left(held) if held else {})
    expected = on_nodes(expected_left(held) if held else {}) if expected_left else None
    return plan_placements(jobs, view.free, view.capacity, ends, headroom, expected)


def _placed_a_head(jobs: Sequence[PendingJob], placed: set[str]) -> bool:
    """Whether the jobs ``placed`` are the first of ``jobs``."""
    return all(job.job_id in placed for job in jobs[: len(placed)])
