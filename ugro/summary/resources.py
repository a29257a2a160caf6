"""The daily summary's resource figures: GPU and CPU use per node and overall, from
the health samples of one day, and how many jobs waited, from the registry. Pure.

Utilisation is time-weighted: the health sweep samples every 5 s while jobs run and
every 60 s when all is calm, so a plain mean of the samples would count busy hours
twelve times over. Each sample stands for the time until the node's next one, at
most ``GAP_SECONDS``: a longer silence (the sweep was down) counts as no data.

Which jobs waited, and when, comes from the registry's jobs and attempts, not from
the queue length a sample saw: a sample sees the queue only at its moment, not at
all while the sweep is down, and not a job waiting out a retry backoff, so a job
that sat queued all day could be counted as none. The registry's jobs are those the
page's Experiments section counts.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel

from ugro.health.samples import NodeSample
from ugro.jobs.lifecycle import JobStatus

if TYPE_CHECKING:
    from ugro.registry.models import AttemptRow, EventRow, JobRow
    from ugro.summary.day import Day

#: The longest a health sample stands for (twice the sweep's slowest interval).
GAP_SECONDS = 120.0


class Peak(BaseModel):
    value: float
    at: datetime
    node: str | None = None


class NodeResources(BaseModel):
    node: str
    samples: int
    hours_covered: float
    gpus: int
    gpu_util_avg: float | None
    gpu_util_peak: Peak | None
    cpu_avg: float | None
    cpu_peak: Peak | None
    #: GPUs no job leased in any sample of the day.
    idle_gpus: list[int]
    idle_gpu_hours_while_waiting: float
    breaker_open_samples: int


class Resources(BaseModel):
    samples: int
    gpu_util_avg: float | None
    gpu_util_peak: Peak | None
    cpu_avg: float | None
    cpu_peak: Peak | None
    idle_gpu_hours_while_waiting: float
    #: The most jobs queued at one moment of the day (see ``waiting_steps``).
    max_pending: int
    nodes: list[NodeResources]
    #: Stretches of the day in which a job held a GPU idle long enough to be
    #: flagged (``ugro.health.idle``), and the GPU-hours they held idle.
    idle_held_gpus: int = 0
    idle_held_gpu_hours: float = 0.0


# Waiting jobs ----------------------------------------------------------------------

#: A stretch of time a job sat in the queue: (from, to), ``to`` None while it waits.
Wait = tuple[datetime, datetime | None]
#: How many jobs waited from each moment on: (moment, count), oldest first, one per
#: change; none waited before the first.
WaitingSteps = list[tuple[datetime, int]]
_BACK_IN_QUEUE = frozenset({JobStatus.QUEUED.value, JobStatus.PLACED.value})


def queue_waits(
    job: JobRow, attempts: Sequence[AttemptRow], requeued: Sequence[datetime] = ()
) -> list[Wait]:
    """When ``job`` sat in the queue (queued: waiting for GPUs or out a retry
    backoff), as far as the registry tells.

    A job waits from its submission to its first placement, then again from each
    requeue to its next placement. The registry dates each attempt's start and
    end but, of the job, only its latest placement, claim and end; so a wait ends
    at the first of those (or of the next attempt's start) that comes after the
    wait began, and a requeue is dated by its ``requeued`` event when one is given
    (a retry by hand comes long after the attempt's end), else by the attempt's end.

    Args:
        job: the job's row.
        attempts: its attempts, every one (a wait begins at the end of the one before).
        requeued: when its ``requeued`` events were written, those that are known.
    """
    waits: list[Wait] = []
    start: datetime | None = job.created_at
    runs = sorted(attempts, key=lambda attempt: attempt.number)
    for position, attempt in enumerate(runs, start=1):
        after = runs[position] if position < len(runs) else None
        if start is not None and start < attempt.started_at:
            waits.append((start, _left_queue(job, start, attempt.started_at)))
        start = _requeued_after(job, attempt, after, requeued)
    if start is not None:
        waits.append((start, _left_queue(job, start, None)))
    return waits


def _requeued_after(
    job: JobRow, attempt: AttemptRow, after: AttemptRow | None, requeued: Sequence[datetime]
) -> datetime | None:
    """When the job went back to the queue after ``attempt`` (``after``: the attempt
    that followed, if any), or None if it did not."""
    ended = attempt.ended_at
    if ended is None:
        return None  # still running (or its end was never recorded)
    if after is None and not _back_in_queue(job, attempt, requeued):
        return None
    limit = after.started_at if after is not None else None
    dated = [at for at in requeued if ended <= at and (limit is None or at <= limit)]
    return min(dated, default=ended)


def _back_in_queue(job: JobRow, last: AttemptRow, requeued: Sequence[datetime]) -> bool:
    """Whether the job went back to the queue after ``last``, its latest known attempt:
    it waits there now, it was claimed again, or it was cancelled there (its attempt
    ended some other way)."""
    assert last.ended_at is not None
    return (
        job.status in _BACK_IN_QUEUE
        or job.attempt > last.number
        or any(at >= last.ended_at for at in requeued)
        or (job.status == JobStatus.CANCELLED.value and last.exit_reason != "cancelled")
    )


def _left_queue(job: JobRow, start: datetime, next_start: datetime | None) -> datetime | None:
    """The end of a wait that began at ``start``: the first placement, claim or end
    of the job at or after it (None: it still waits)."""
    marks = (job.placed_at, job.started_at, job.finished_at, next_start)
    return min((mark for mark in marks if mark is not None and mark >= start), default=None)


def jobs_waiting(
    jobs: Iterable[JobRow],
    attempts: Iterable[AttemptRow],
    events: Iterable[EventRow],
    since: datetime,
    until: datetime,
) -> WaitingSteps:
    """How many of ``jobs`` waited at each moment of [since, until), from all their
    ``attempts`` and the ``requeued`` among ``events``."""
    runs: dict[str, list[AttemptRow]] = {}
    for attempt in attempts:
        runs.setdefault(attempt.job_id, []).append(attempt)
    requeued: dict[str, list[datetime]] = {}
    for event in events:
        if event.kind == "requeued" and event.job_id is not None:
            requeued.setdefault(event.job_id, []).append(event.created_at)
    waits = [
        wait
        for job in jobs
        for wait in queue_waits(job, runs.get(job.id, []), requeued.get(job.id, []))
    ]
    return waiting_steps(waits, since, until)


def waiting_steps(waits: Iterable[Wait], since: datetime, until: datetime) -> WaitingSteps:
    """How many jobs waited at each moment of [since, until), as steps."""
    changes: dict[datetime, int] = {}
    for start, end in waits:
        begin, stop = max(start, since), until if end is None else min(end, until)
        if begin < stop:  # a wait ends as the next begins: [begin, stop)
            changes[begin] = changes.get(begin, 0) + 1
            changes[stop] = changes.get(stop, 0) - 1
    steps: WaitingSteps = []
    count = 0
    for moment in sorted(changes):
        count += changes[moment]
        steps.append((moment, count))
    return steps


def waiting_at(steps: WaitingSteps, moment: datetime) -> int:
    """How many jobs waited at ``moment``."""
    index = bisect_right(steps, moment, key=lambda step: step[0])
    return steps[index - 1][1] if index else 0


# Resources -------------------------------------------------------------------------


def node_gpu_util(sample: NodeSample) -> float | None:
    """Mean utilisation of the node's GPUs that answered, in percent."""
    values = [g.utilization for g in sample.gpus if g.utilization is not None and g.error is None]
    return sum(values) / len(values) if values else None


def weights(times: Sequence[datetime], until: datetime, gap: float) -> list[float]:
    """Seconds each sample stands for: until the next (or the day's end), at most ``gap``."""
    if not times:
        return []
    ends = [*times[1:], until]
    return [
        max(0.0, min(gap, (end - start).total_seconds()))
        for start, end in zip(times, ends, strict=True)
    ]


def _weighted(values: Iterable[tuple[float | None, float]]) -> float | None:
    total = weight = 0.0
    for value, w in values:
        if value is not None:
            total += value * w
            weight += w
    return round(total / weight, 1) if weight > 0 else None


def _peak(
    values: Iterable[tuple[float | None, datetime]], day: Day, node: str | None
) -> Peak | None:
    best: tuple[float, datetime] | None = None
    for value, at in values:
        if value is not None and (best is None or value > best[0]):
            best = (value, at)
    if best is None:
        return None
    return Peak(value=round(best[0], 1), at=day.local(best[1]), node=node)


def resources(found: list[NodeSample], day: Day, gap: float, waiting: WaitingSteps) -> Resources:
    """The day's figures from its health samples and ``waiting``, how many jobs
    waited when (``waiting_steps`` of the day's jobs)."""
    per_node: dict[str, list[NodeSample]] = {}
    for sample in found:
        per_node.setdefault(sample.node, []).append(sample)
    nodes = [
        _node_resources(name, rows, day, gap, waiting) for name, rows in sorted(per_node.items())
    ]
    utils, cpus = _cluster_series(found, day, gap)
    held = _held_idle(found, day)
    return Resources(
        samples=len(found),
        gpu_util_avg=_weighted((value, w) for value, w, _ in utils),
        gpu_util_peak=_peak(((value, at) for value, _, at in utils), day, None),
        cpu_avg=_weighted((value, w) for value, w, _ in cpus),
        cpu_peak=_peak(((value, at) for value, _, at in cpus), day, None),
        idle_gpu_hours_while_waiting=round(sum(n.idle_gpu_hours_while_waiting for n in nodes), 3),
        max_pending=max((count for _, count in waiting), default=0),
        nodes=nodes,
        idle_held_gpus=held[0],
        idle_held_gpu_hours=held[1],
    )


def _held_idle(found: list[NodeSample], day: Day) -> tuple[int, float]:
    """How many idle stretches of held GPUs were flagged during the day, and the
    GPU-hours each held idle within it: from the stretch's start (or the day's)
    to its last sample of the day."""
    last: dict[tuple[str, int, str | None, float], datetime] = {}
    for sample in found:
        for gpu in sample.gpus:
            if gpu.held_idle and gpu.idle_since is not None:
                last[(sample.node, gpu.index, gpu.job, gpu.idle_since)] = sample.at
    start = day.since.timestamp()
    seconds = sum(
        max(0.0, at.timestamp() - max(since, start)) for (_, _, _, since), at in last.items()
    )
    return len(last), round(seconds / 3600, 3)


def _node_resources(
    node: str, rows: list[NodeSample], day: Day, gap: float, waiting: WaitingSteps
) -> NodeResources:
    w = weights([s.at for s in rows], day.until, gap)
    utils = [node_gpu_util(s) for s in rows]
    indices = sorted({g.index for s in rows for g in s.gpus})
    ever_busy = {g.index for s in rows for g in s.gpus if g.busy}
    idle_seconds = sum(
        weight * sum(1 for g in s.gpus if not g.busy and g.error is None)
        for s, weight in zip(rows, w, strict=True)
        if waiting_at(waiting, s.at) > 0
    )
    return NodeResources(
        node=node,
        samples=len(rows),
        hours_covered=round(sum(w) / 3600, 3),
        gpus=len(indices),
        gpu_util_avg=_weighted(zip(utils, w, strict=True)),
        gpu_util_peak=_peak(zip(utils, (s.at for s in rows), strict=True), day, node),
        cpu_avg=_weighted(zip((s.cpu_percent for s in rows), w, strict=True)),
        cpu_peak=_peak(((s.cpu_percent, s.at) for s in rows), day, node),
        idle_gpus=[i for i in indices if i not in ever_busy],
        idle_gpu_hours_while_waiting=round(idle_seconds / 3600, 3),
        breaker_open_samples=sum(1 for s in rows if s.breaker == "open"),
    )


Series = list[tuple[float | None, float, datetime]]


def _cluster_series(found: list[NodeSample], day: Day, gap: float) -> tuple[Series, Series]:
    """Cluster-wide GPU utilisation (weighted by GPU count) and mean CPU at each
    sample's moment, from every node's latest sample no older than ``gap``."""
    latest: dict[str, NodeSample] = {}
    utils: Series = []
    cpus: Series = []
    w = weights([s.at for s in found], day.until, gap)
    for sample, weight in zip(found, w, strict=True):
        latest[sample.node] = sample
        fresh = [s for s in latest.values() if (sample.at - s.at).total_seconds() <= gap]
        readings = [
            g.utilization
            for s in fresh
            for g in s.gpus
            if g.utilization is not None and g.error is None
        ]
        util = sum(readings) / len(readings) if readings else None
        cpu_values = [s.cpu_percent for s in fresh if s.cpu_percent is not None]
        cpu = sum(cpu_values) / len(cpu_values) if cpu_values else None
        utils.append((util, weight, sample.at))
        cpus.append((cpu, weight, sample.at))
    return utils, cpus
