"""Prometheus metrics for jobs, queues, GPUs and nodes: ``ugro metrics``.

Everything is read at scrape time from the registry and Redis, so the exporter
holds no state a restart could lose, except the two histograms and the GPU-seconds
counter: they count what the registry recorded since the exporter started (first
scrape: all of it), read incrementally by attempt id, so a scrape costs one small
query each. The attempts still running are read again at each scrape (the same
query returns them) and counted up to then.
Names follow Prometheus conventions: the ``ugro_`` prefix, base units (seconds,
bytes, ratios), ``_total`` only on counters.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from ugro.jobs.lifecycle import JobStatus
from ugro.live.clock import server_time
from ugro.registry.models import AttemptRow, JobRow, as_utc
from ugro.registry.usage import all_gpus
from ugro.runtime import Runtime

# Submit -> start: from a few ms (a free GPU) to hours (a busy cluster).
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
# Job durations: seconds to days.
DURATION_BUCKETS = (1, 10, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400, 7 * 86400)
_MIB = 2**20
_BREAKER_STATES = ("closed", "half_open", "open")
_LEVELS = ("INFO", "WARNING", "CRITICAL")
#: The labels of GPU time: the job's user and group ("" when it has none).
_UserGroup = tuple[str, str]


@dataclass(frozen=True)
class _RunningAttempt:
    """An attempt without an end, as the last scrape read it."""

    labels: _UserGroup
    gpus: int  # on all its nodes
    started: datetime
    #: Its job's end, when the job ended without the attempt's end being recorded.
    job_ended: datetime | None


@dataclass
class _Histogram:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        cumulative = 0
        found: list[tuple[str, float]] = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            cumulative += count
            found.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
        return found


class UgroCollector(Collector):
    """Collects ugro's metrics on each scrape."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._lock = threading.Lock()
        self._latency = _Histogram(LATENCY_BUCKETS)
        self._durations: dict[str, _Histogram] = {}
        self._started_after = 0  # highest first-attempt id counted in the latency
        self._ended_after = 0  # highest attempt id below which every attempt ended
        self._ended: set[int] = set()  # attempts above that mark already counted
        self._gpu_seconds: dict[_UserGroup, float] = {}  # of the ended attempts counted
        self._running: list[_RunningAttempt] = []  # as of the last scrape
        self._gpu_seconds_shown: dict[_UserGroup, float] = {}

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            yield from self._jobs()
            yield from self._queues()
            yield from self._gpus()
            yield from self._nodes()
            self._read_new_attempts()
            yield from self._histograms()
            yield from self._gpu_time()

    def _jobs(self) -> Iterator[Metric]:
        query = select(JobRow.status, func.count()).group_by(JobRow.status)
        with self.rt.registry.engine.connect() as conn:
            counts = {str(status): int(n) for status, n in conn.execute(query)}
        jobs = GaugeMetricFamily("ugro_jobs", "Jobs in the registry by status.", labels=["status"])
        for status in JobStatus:
            jobs.add_metric([status.value], counts.get(status.value, 0))
        yield jobs

    def _queues(self) -> Iterator[Metric]:
        live = self.rt.live
        pipe = live.redis.pipeline(transaction=False)
        pipe.zcard(live.keys.pending)
        pipe.zcard(live.keys.delayed)
        pending, delayed = pipe.execute()
        depth = GaugeMetricFamily(
            "ugro_queue_depth",
            "Jobs waiting: 'pending' for a GPU, 'delayed' for their retry backoff.",
            labels=["queue"],
        )
        depth.add_metric(["pending"], pending)
        depth.add_metric(["delayed"], delayed)
        yield depth

    def _gpus(self) -> Iterator[Metric]:
        labels = ["node", "gpu"]
        util = GaugeMetricFamily(
            "ugro_gpu_utilization_ratio", "GPU utilisation, 0-1.", labels=labels
        )
        used = GaugeMetricFamily("ugro_gpu_memory_used_bytes", "GPU memory in use.", labels=labels)
        total = GaugeMetricFamily("ugro_gpu_memory_total_bytes", "GPU memory.", labels=labels)
        temp = GaugeMetricFamily("ugro_gpu_temperature_celsius", "GPU temperature.", labels=labels)
        power = GaugeMetricFamily("ugro_gpu_power_watts", "GPU power draw.", labels=labels)
        up = GaugeMetricFamily(
            "ugro_gpu_available", "1 when the GPU can take a job (not blocked).", labels=labels
        )
        leased = GaugeMetricFamily(
            "ugro_gpu_leased", "1 while a job holds the GPU's lease.", labels=labels
        )
        holder = GaugeMetricFamily(
            "ugro_gpu_lease_holder_info",
            "The job holding the GPU's lease (value 1).",
            labels=[*labels, "job_id"],
        )
        workers = self.rt.live.workers(max_age=self.rt.settings.worker_ttl)
        by_node: dict[str, list[int]] = {}
        for worker in workers:
            by_node.setdefault(worker.node, []).append(worker.index)
        holders: dict[tuple[str, int], str | None] = {}
        for node, indices in by_node.items():
            for index, value in self.rt.live.leases.lease_holders(node, indices).items():
                holders[(node, index)] = value
        for worker in workers:
            key = [worker.node, str(worker.index)]
            reading: dict[str, Any] = worker.gpu or {}
            _add(util, key, reading.get("utilization"), 0.01)
            _add(used, key, reading.get("memory_used_mb"), _MIB)
            _add(total, key, reading.get("memory_total_mb"), _MIB)
            _add(temp, key, reading.get("temperature_c"))
            _add(power, key, reading.get("power_w"))
            up.add_metric(key, 0 if worker.blocked else 1)
            job = holders.get((worker.node, worker.index))
            leased.add_metric(key, 1 if job else 0)
            if job:
                holder.add_metric([*key, job.partition("|")[0]], 1)
        yield from (util, used, total, temp, power, up, leased, holder)

    def _nodes(self) -> Iterator[Metric]:
        from ugro.health.sweep import latest_health

        score = GaugeMetricFamily(
            "ugro_node_health_score", "The node's health score, 0-100.", labels=["node"]
        )
        level = GaugeMetricFamily(
            "ugro_node_health_level", "1 for the node's current level.", labels=["node", "level"]
        )
        breaker = GaugeMetricFamily(
            "ugro_node_breaker_state",
            "1 for the state the node's circuit breaker is in.",
            labels=["node", "state"],
        )
        idle = GaugeMetricFamily(
            "ugro_gpu_held_idle_seconds",
            "How long a running job has held the GPU idle, once flagged (UGRO_IDLE_GPU_AFTER).",
            labels=["node", "gpu", "job"],
        )
        for node, sample in sorted(latest_health(self.rt).items()):
            score.add_metric([node], float(str(sample["score"])))
            for name in _LEVELS:
                level.add_metric([node, name], 1 if sample["level"] == name else 0)
            for state in _BREAKER_STATES:
                breaker.add_metric([node, state], 1 if sample["breaker"] == state else 0)
            at = datetime.fromisoformat(str(sample["at"])).timestamp()
            for gpu in cast(list[dict[str, Any]], sample.get("gpus") or []):
                if gpu.get("held_idle") and gpu.get("idle_since") is not None:
                    held = max(0.0, at - float(gpu["idle_since"]))
                    idle.add_metric([node, str(gpu["index"]), str(gpu.get("job"))], held)
        yield from (score, level, breaker, idle)

    def _histograms(self) -> Iterator[Metric]:
        latency = HistogramMetricFamily(
            "ugro_dispatch_latency_seconds",
            "Submit to the start of a job's first attempt.",
            buckets=self._latency.buckets(),
            sum_value=self._latency.total,
        )
        yield latency
        durations = HistogramMetricFamily(
            "ugro_job_duration_seconds",
            "How long attempts ran, by outcome (ok, error, oom, timeout, cancelled, ...).",
            labels=["outcome"],
        )
        for outcome, histogram in sorted(self._durations.items()):
            durations.add_metric([outcome], histogram.buckets(), histogram.total)
        yield durations

    def _read_new_attempts(self) -> None:
        started = (
            select(AttemptRow.id, AttemptRow.started_at, JobRow.created_at)
            .join(JobRow, JobRow.id == AttemptRow.job_id)
            .where(AttemptRow.id > self._started_after, AttemptRow.number == 1)
            .order_by(AttemptRow.id)
        )
        ended = (
            select(
                AttemptRow.id,
                AttemptRow.started_at,
                AttemptRow.ended_at,
                AttemptRow.exit_reason,
                JobRow.user,
                JobRow.group_name,
                JobRow.gpus,
                JobRow.members,
                JobRow.finished_at,
            )
            .join(JobRow, JobRow.id == AttemptRow.job_id)
            .where(AttemptRow.id > self._ended_after)
            .order_by(AttemptRow.id)
        )
        self._running = []
        with self.rt.registry.engine.connect() as conn:
            for attempt_id, started_at, created_at in conn.execute(started):
                start, created = as_utc(started_at), as_utc(created_at)
                if start is not None and created is not None:
                    self._latency.observe(max((start - created).total_seconds(), 0.0))
                self._started_after = attempt_id
            still_running = False
            for row in conn.execute(ended):
                attempt_id, started_at, ended_at, reason = row[:4]
                user, group, gpus_each, members, job_ended = row[4:]
                labels = (user or "", group or "")
                gpus = all_gpus(gpus_each, members)
                start = cast(datetime, as_utc(started_at))
                if ended_at is None:
                    still_running = True
                    self._running.append(_RunningAttempt(labels, gpus, start, as_utc(job_ended)))
                    continue
                if attempt_id in self._ended:
                    continue
                self._ended.add(attempt_id)
                seconds = (cast(datetime, as_utc(ended_at)) - start).total_seconds()
                outcome = reason or "unknown"
                self._durations.setdefault(outcome, _Histogram(DURATION_BUCKETS)).observe(seconds)
                used = self._gpu_seconds.get(labels, 0.0) + gpus * max(seconds, 0.0)
                self._gpu_seconds[labels] = used
                if not still_running:
                    # Everything up to here has ended: move the mark, drop the set.
                    self._ended_after = attempt_id
                    self._ended = {i for i in self._ended if i > attempt_id}

    def _gpu_time(self) -> Iterator[Metric]:
        # Running attempts count up to now by the cluster's clock (Redis's), as
        # every part that compares a recorded time with the present does.
        now = datetime.fromtimestamp(server_time(self.rt.live.redis), UTC)
        totals = dict(self._gpu_seconds)
        for attempt in self._running:
            end = attempt.job_ended or now
            seconds = max((end - attempt.started).total_seconds(), 0.0)
            totals[attempt.labels] = totals.get(attempt.labels, 0.0) + attempt.gpus * seconds
        # A counter never goes back (Prometheus would read a reset): an attempt's
        # recorded end, from its worker's clock, may fall a moment before the
        # Redis time up to which the scrape before counted it running.
        shown = self._gpu_seconds_shown
        for labels, seconds in totals.items():
            shown[labels] = max(seconds, shown.get(labels, 0.0))
        family = CounterMetricFamily(
            "ugro_gpu_seconds",
            "GPU-seconds of attempts (ended ones, and running ones up to now), by the"
            " job's user and group; a job's GPUs on all its nodes.",
            labels=["user", "group"],
        )
        for labels in sorted(shown):
            family.add_metric(list(labels), shown[labels])
        yield family


def _add(family: GaugeMetricFamily, labels: list[str], value: Any, scale: float = 1.0) -> None:
    if value is not None:
        family.add_metric(labels, float(value) * scale)


def serve_metrics(rt: Runtime, address: str, port: int) -> Any:
    """Serve the metrics on ``address:port`` from a background thread; returns the
    server (``.shutdown()`` stops it)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(UgroCollector(rt))
    server, _thread = start_http_server(port, addr=address, registry=registry)
    return server
