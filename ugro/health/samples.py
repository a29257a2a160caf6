"""Health samples: what each sweep found per node, kept in the registry, bounded.

The health sweep adds one row per node per sweep (every 5 s while jobs run): 17,280
a day per node. Once an hour the sweep thins the rows older than a day to one per
node per minute and deletes those older than ``UGRO_HEALTH_RETENTION_DAYS``, so a
50-node lab keeps about 0.9 million rows a day for the last day and 72,000 a day
before it. The daily summary and ``ugro nodes --history`` read them back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select

from ugro.registry.models import NodeSampleRow, as_utc
from ugro.registry.store import Registry


@dataclass(frozen=True)
class GpuSample:
    index: int
    utilization: float | None = None  # percent
    memory_used_mb: float | None = None
    memory_total_mb: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    busy: bool = False  # a ugro job held its lease when the GPU was read
    error: str | None = None  # the device did not answer
    job: str | None = None  # the job that held its lease then (None: free, or unknown)
    # Unix time since which the GPU, held by ``job``, reads under
    # UGRO_IDLE_GPU_PERCENT utilisation (``ugro.health.idle``); None: it does not.
    idle_since: float | None = None
    # Held idle for UGRO_IDLE_GPU_AFTER or longer: flagged (the daily summary
    # counts these stretches as GPU-hours lost).
    held_idle: bool = False


@dataclass(frozen=True)
class NodeSample:
    node: str
    at: datetime
    score: int
    level: str
    breaker: str
    reachable: bool
    latency_ms: float | None = None
    cpu_percent: float | None = None
    memory_percent: float | None = None
    disk_percent: float | None = None
    pending: int = 0
    gpus: tuple[GpuSample, ...] = ()
    reasons: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        values["at"] = self.at.isoformat()
        values["gpus"] = [vars(gpu) for gpu in self.gpus]
        values["reasons"] = list(self.reasons)
        return values


def add_sample(registry: Registry, sample: NodeSample) -> None:
    add_samples(registry, [sample])


def add_samples(registry: Registry, found: list[NodeSample]) -> None:
    """Store one sweep's samples in one transaction."""
    rows = []
    for sample in found:
        values = sample.to_dict()
        values["at"] = sample.at
        values["gpus"] = json.dumps(values["gpus"])
        values["reasons"] = json.dumps(values["reasons"])
        rows.append(values)
    if rows:
        with registry.engine.begin() as conn:
            conn.execute(insert(NodeSampleRow), rows)


def samples(
    registry: Registry,
    since: datetime,
    until: datetime | None = None,
    node: str | None = None,
) -> list[NodeSample]:
    """Samples taken in [since, until), oldest first."""
    query = select(NodeSampleRow.__table__).where(NodeSampleRow.at >= since)
    if until is not None:
        query = query.where(NodeSampleRow.at < until)
    if node is not None:
        query = query.where(NodeSampleRow.node == node)
    query = query.order_by(NodeSampleRow.at, NodeSampleRow.id)
    with registry.engine.connect() as conn:
        return [_from_row(dict(row._mapping)) for row in conn.execute(query)]


def prune_samples(registry: Registry, before: datetime) -> int:
    with registry.engine.begin() as conn:
        result = conn.execute(delete(NodeSampleRow).where(NodeSampleRow.at < before))
        return int(result.rowcount or 0)


#: Which sample of a minute is kept when thinning: the worst level, so a minute
#: that went CRITICAL still shows it (among equals, the earliest).
_LEVEL_RANK = {"INFO": 0, "WARNING": 1, "CRITICAL": 2}
# Rows are thinned an hour of samples at a time, deleted a batch of ids at a time
# (SQLite caps a statement's parameters).
_THIN_STEP = timedelta(hours=1)
_DELETE_BATCH = 500


def thin_samples(registry: Registry, since: datetime, until: datetime, bucket: float) -> int:
    """Keep one sample per node per ``bucket`` seconds taken in [since, until): the
    one with the worst level, the earliest among equals. Returns how many rows were
    deleted; thinning the same span again deletes nothing."""
    removed = 0
    start = since
    while start < until:
        end = min(start + _THIN_STEP, until)
        removed += _thin_span(registry, start, end, bucket)
        start = end
    return removed


def _thin_span(registry: Registry, since: datetime, until: datetime, bucket: float) -> int:
    table = NodeSampleRow.__table__
    query = (
        select(table.c.id, table.c.node, table.c.at, table.c.level)
        .where(table.c.at >= since, table.c.at < until)
        .order_by(table.c.node, table.c.at, table.c.id)
    )
    kept: dict[tuple[str, int], tuple[int, int]] = {}  # (node, minute) -> (rank, id)
    doomed: list[int] = []
    with registry.engine.connect() as conn:
        for row_id, node, at, level in conn.execute(query):
            stamp = as_utc(at)
            assert stamp is not None
            slot = (node, int(stamp.timestamp() // bucket))
            rank = _LEVEL_RANK.get(level, 0)
            best = kept.get(slot)
            if best is None or rank > best[0]:
                kept[slot] = (rank, row_id)
                if best is not None:
                    doomed.append(best[1])
            else:
                doomed.append(row_id)
    with registry.engine.begin() as conn:
        for first in range(0, len(doomed), _DELETE_BATCH):
            batch = doomed[first : first + _DELETE_BATCH]
            conn.execute(delete(NodeSampleRow).where(NodeSampleRow.id.in_(batch)))
    return len(doomed)


def _from_row(values: dict[str, Any]) -> NodeSample:
    values.pop("id", None)
    at = as_utc(values.pop("at"))
    assert at is not None
    gpus = tuple(GpuSample(**gpu) for gpu in json.loads(values.pop("gpus") or "[]"))
    reasons = tuple(json.loads(values.pop("reasons") or "[]"))
    return NodeSample(at=at, gpus=gpus, reasons=reasons, **values)
