"""The daily summary's resource figures: GPU and CPU use per node and overall, from
the health samples of one day. Pure.

Utilisation is time-weighted: the health sweep samples every 5 s while jobs run and
every 60 s when all is calm, so a plain mean of the samples would count busy hours
twelve times over. Each sample stands for the time until the node's next one, at
most ``GAP_SECONDS``: a longer silence (the sweep was down) counts as no data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel

from ugro.samples import NodeSample

if TYPE_CHECKING:
    from ugro.summary_day import Day

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
    max_pending: int
    nodes: list[NodeResources]


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


def resources(found: list[NodeSample], day: Day, gap: float) -> Resources:
    per_node: dict[str, list[NodeSample]] = {}
    for sample in found:
        per_node.setdefault(sample.node, []).append(sample)
    nodes = [_node_resources(name, rows, day, gap) for name, rows in sorted(per_node.items())]
    utils, cpus = _cluster_series(found, day, gap)
    return Resources(
        samples=len(found),
        gpu_util_avg=_weighted((value, w) for value, w, _ in utils),
        gpu_util_peak=_peak(((value, at) for value, _, at in utils), day, None),
        cpu_avg=_weighted((value, w) for value, w, _ in cpus),
        cpu_peak=_peak(((value, at) for value, _, at in cpus), day, None),
        idle_gpu_hours_while_waiting=round(sum(n.idle_gpu_hours_while_waiting for n in nodes), 3),
        max_pending=max((s.pending for s in found), default=0),
        nodes=nodes,
    )


def _node_resources(node: str, rows: list[NodeSample], day: Day, gap: float) -> NodeResources:
    w = weights([s.at for s in rows], day.until, gap)
    utils = [node_gpu_util(s) for s in rows]
    indices = sorted({g.index for s in rows for g in s.gpus})
    ever_busy = {g.index for s in rows for g in s.gpus if g.busy}
    idle_seconds = sum(
        weight * sum(1 for g in s.gpus if not g.busy and g.error is None)
        for s, weight in zip(rows, w, strict=True)
        if s.pending > 0
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
