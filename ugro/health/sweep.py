"""The health sweep: score every node, drive its breaker, keep dispatch off bad nodes.

Beat asks for a sweep every ``health_min_interval``; a gate key in Redis lets one
through per current interval, which adapts: ``health_min_interval`` while jobs
run or a node is degraded, growing by half each calm sweep up to
``health_max_interval``. Each sweep probes the cluster file's nodes over SSH
(concurrently), reads every agent's latest reading, scores each node, records
the check in its breaker, stores a sample, and rewrites the set of nodes
dispatch must skip. Jobs already running on a bad node are left alone; the
alert names them.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from ugro.errors import InventoryError
from ugro.health.breaker import BreakerState, BreakerStatus, CircuitBreaker
from ugro.health.cluster import ClusterNode, load_cluster
from ugro.health.idle import flag_idle, idle_fields, newly_idle
from ugro.health.readings import NodeReading, latest_readings
from ugro.health.samples import GpuSample, NodeSample, add_samples, prune_samples, thin_samples
from ugro.health.score import Verdict, score_node
from ugro.live.clock import server_time
from ugro.runtime import Runtime
from ugro.transport.queues import control_queue

if TYPE_CHECKING:
    from ugro.health.netprobe import NetProbe

log = logging.getLogger(__name__)

# A node nothing has reported for this long (and not in the cluster file) is
# dropped from the sweep: it was taken out of the lab.
_FORGET_AFTER = 86_400.0
_PRUNE_EVERY = 3600
# Samples older than this are thinned to one per node per _THIN_BUCKET seconds.
_FULL_RESOLUTION = 86_400.0
_THIN_BUCKET = 60.0


@dataclass
class SweepReport:
    nodes: dict[str, NodeSample] = field(default_factory=dict)
    interval: float = 0.0
    duration: float = 0.0
    #: Nodes taken off the list dispatch skips: jobs may have waited for exactly
    #: these, so the caller runs a dispatch pass (health never places jobs itself).
    recovered: list[str] = field(default_factory=list)


def breaker_for(rt: Runtime) -> CircuitBreaker:
    s = rt.settings
    return CircuitBreaker(rt.live.redis, rt.live.keys, s.breaker_failures, s.breaker_open_seconds)


def health_sweep(rt: Runtime, force: bool = False) -> SweepReport | None:
    """One sweep, unless one ran less than the current interval ago (``force``
    skips that check). Returns None when it did not run."""
    s, live, keys = rt.settings, rt.live, rt.live.keys
    interval = float(
        cast(str | None, live.redis.get(keys.health_interval)) or s.health_min_interval
    )
    # The gate lapses a little before the interval does, so beat's tick that
    # arrives right on time is not turned away by a few milliseconds. Beat ticks
    # every health_min_interval, so the real interval is the next whole tick.
    slack = min(0.5, 0.1 * s.health_min_interval)
    gate_ms = int(max(interval - slack, 0.1) * 1000)
    if not force and not live.redis.set(
        keys.health_gate, secrets.token_hex(4), nx=True, px=gate_ms
    ):
        return None
    started = time.monotonic()
    # Redis's clock, the one the nodes' agents stamp their readings with: a node
    # whose own clock is minutes off is not taken for silent.
    now = server_time(live.redis)
    cluster = _cluster_nodes(rt)
    nodes = _nodes_to_check(rt, cluster, now)
    probes: dict[str, NetProbe] = {}
    if cluster:
        from ugro.health.netprobe import probe_nodes  # paramiko: only where nodes are probed

        probes = probe_nodes(cluster, s.effective_known_hosts, s.ssh_timeout)
    readings = latest_readings(rt, nodes)
    previous = _latest_samples(rt)
    pending = int(live.redis.zcard(keys.pending))
    breaker = breaker_for(rt)
    report = SweepReport()
    busy_anywhere = False
    for node in nodes:
        verdict = score_node(readings.get(node), probes.get(node), now, s)
        status = breaker.record(node, ok=verdict.level != "CRITICAL", now=now)
        state = _shown_state(status, now, s.breaker_open_seconds)
        # The leases now set the interval (a job placed since the agent's last
        # reading brings the next sweep closer); a sample's GPUs are busy as read.
        leased = _leased_now(rt, node, readings.get(node), probes.get(node))
        busy_anywhere = busy_anywhere or any(leased.values())
        sample = _sample(
            node,
            now,
            verdict,
            state,
            readings.get(node),
            probes.get(node),
            leased,
            pending,
            previous.get(node),
            (s.idle_gpu_percent, s.idle_gpu_after),
        )
        report.nodes[node] = sample
        _alert(rt, node, sample, previous.get(node), status)
        flag_idle(rt, sample, newly_idle(sample, previous.get(node)))
        if _mark_dispatch(rt, node, sample):
            report.recovered.append(node)
    _store(rt, report)
    calm = not busy_anywhere and all(
        sample.level == "INFO" and sample.breaker == "closed" for sample in report.nodes.values()
    )
    report.interval = min(interval * 1.5, s.health_max_interval) if calm else s.health_min_interval
    live.redis.set(keys.health_interval, report.interval)
    report.duration = time.monotonic() - started
    return report


def _cluster_nodes(rt: Runtime) -> list[ClusterNode]:
    path = rt.settings.effective_cluster_file
    if path is None:
        return []
    try:
        return load_cluster(path)
    except InventoryError as exc:
        # A broken cluster file must not stop the sweep of the other nodes.
        log.error("health sweep: %s", exc)
        return []


def _nodes_to_check(rt: Runtime, cluster: list[ClusterNode], now: float) -> list[str]:
    keys = rt.live.keys
    known = cast(dict[str, str], rt.live.redis.hgetall(keys.health_nodes))
    workers = {w.node for w in rt.live.workers(max_age=rt.settings.worker_ttl)}
    listed = {node.name for node in cluster}
    gone = [
        node
        for node, seen in known.items()
        if now - float(seen) > _FORGET_AFTER and node not in listed and node not in workers
    ]
    if gone:
        pipe = rt.live.redis.pipeline()
        pipe.hdel(keys.health_nodes, *gone)
        pipe.hdel(keys.node_health, *gone)
        pipe.hdel(keys.unhealthy_nodes, *gone)
        pipe.delete(*(keys.breaker(node) for node in gone))
        pipe.execute()
    return sorted((set(known) - set(gone)) | workers | listed)


def _shown_state(status: BreakerStatus, now: float, window: float) -> BreakerState:
    if status.state == "open" and status.opened_at and now - status.opened_at >= window:
        return "half_open"
    return status.state


def _leased_now(
    rt: Runtime, node: str, reading: NodeReading | None, probe: NetProbe | None
) -> dict[int, bool]:
    gpus = (reading.gpus if reading else None) or (probe.gpus if probe else None) or []
    indices = [int(gpu["index"]) for gpu in gpus]
    if not indices:
        return {}
    holders = rt.live.leases.lease_holders(node, indices)
    return {index: holder is not None for index, holder in holders.items()}


def _sample(
    node: str,
    now: float,
    verdict: Verdict,
    breaker: BreakerState,
    reading: NodeReading | None,
    probe: NetProbe | None,
    leased: dict[int, bool],
    pending: int,
    previous: dict[str, object] | None = None,
    idle: tuple[float, float] = (0.0, float("inf")),
) -> NodeSample:
    """The sample of one node: its agent's reading when fresh, else what its
    probe's nvidia-smi found. A GPU is busy when a job held it at the moment it
    was read: the agent's reading names that job; a probe read the GPUs during
    this sweep, as ``leased`` was. A GPU held idle keeps, from the ``previous``
    sample, since when, and is flagged once it was for long enough (``idle``:
    the utilisation percent under which a GPU is idle, and for how long)."""
    fresh = reading is not None and verdict.reachable
    gpus = (reading.gpus if reading and fresh else None) or (probe.gpus if probe else None) or []
    before = {
        int(gpu["index"]): gpu
        for gpu in cast(list[dict[str, Any]], (previous or {}).get("gpus") or [])
    }
    return NodeSample(
        node=node,
        at=datetime.fromtimestamp(now, UTC),
        score=verdict.score,
        level=verdict.level,
        breaker=breaker,
        reachable=verdict.reachable,
        latency_ms=verdict.latency_ms,
        cpu_percent=reading.cpu_percent if reading and fresh else None,
        memory_percent=reading.memory_percent if reading and fresh else None,
        disk_percent=reading.disk_percent if reading and fresh else None,
        pending=pending,
        gpus=tuple(
            GpuSample(
                index=int(gpu["index"]),
                utilization=gpu.get("utilization"),
                memory_used_mb=gpu.get("memory_used_mb"),
                memory_total_mb=gpu.get("memory_total_mb"),
                temperature_c=gpu.get("temperature_c"),
                power_w=gpu.get("power_w"),
                busy=(
                    gpu["job"] is not None if "job" in gpu else leased.get(int(gpu["index"]), False)
                ),
                error=gpu.get("error"),
                job=gpu.get("job"),
                **idle_fields(
                    before.get(int(gpu["index"])),
                    gpu.get("job"),
                    gpu.get("utilization"),
                    now,
                    *idle,
                ),
            )
            for gpu in gpus
        ),
        reasons=tuple(verdict.reasons),
    )


def _latest_samples(rt: Runtime) -> dict[str, dict[str, object]]:
    raw = cast(dict[str, str], rt.live.redis.hgetall(rt.live.keys.node_health))
    return {node: json.loads(value) for node, value in raw.items()}


def latest_health(rt: Runtime) -> dict[str, dict[str, object]]:
    """The last sweep's finding per node (NodeSample.to_dict()), for `ugro nodes`
    and the metrics exporter."""
    return _latest_samples(rt)


def _running_on(rt: Runtime, node: str) -> list[str]:
    from ugro.jobs.lifecycle import JobStatus
    from ugro.registry.models import placement_of

    rows = rt.registry.list_jobs(statuses=[JobStatus.RUNNING, JobStatus.PLACED])
    return [row.id for row in rows if any(n == node for n, _ in placement_of(row))]


def _alert(
    rt: Runtime,
    node: str,
    sample: NodeSample,
    before: dict[str, object] | None,
    status: BreakerStatus,
) -> None:
    """Events (and log lines) for what changed; CRITICAL (and WARNING, with
    ``UGRO_ALERT_LEVEL=WARNING``) goes to the notify URLs."""
    why = "; ".join(sample.reasons) or "all checks pass"
    was = str(before["level"]) if before else "INFO"
    registry = rt.registry
    if status.change in ("opened", "reopened"):
        running = _running_on(rt, node)
        left = f"; left running there: {', '.join(running)}" if running else ""
        message = (
            f"breaker of {node} open for {rt.settings.breaker_open_seconds:.0f} s"
            f" after {status.failures} failed checks: {why}{left}"
        )
        log.warning("%s", message)
        registry.add_event("breaker_open", message, node=node)
    elif status.change == "closed":
        message = f"breaker of {node} closed: {why}"
        log.warning("%s", message)
        registry.add_event("breaker_closed", message, node=node)
    if sample.level == was:
        return
    kind = {"CRITICAL": "health_critical", "WARNING": "health_warning", "INFO": "health_ok"}[
        sample.level
    ]
    message = f"{node} {sample.level} (score {sample.score}): {why}"
    log.warning("%s", message)
    registry.add_event(kind, message, node=node)
    # UGRO_ALERT_LEVEL=WARNING sends a node going WARNING too.
    alerted = ("CRITICAL", "WARNING") if rt.settings.alert_level == "WARNING" else ("CRITICAL",)
    if rt.settings.notify_url_list and sample.level in alerted:
        _notify(rt, f"ugro: node {node} is {sample.level}", message)


def _notify(rt: Runtime, title: str, body: str) -> None:
    """Hand the alert to the ``ugro.alert`` task: sending (and retrying a refused
    delivery) must not hold up the sweep."""
    try:
        rt.app.send_task(
            "ugro.alert", args=[title, body], queue=control_queue(rt.settings), ignore_result=True
        )
    except Exception:  # an alert that cannot be queued is logged, the sweep goes on
        log.exception("queueing the alert %r failed", title)


def _mark_dispatch(rt: Runtime, node: str, sample: NodeSample) -> bool:
    """Put ``node`` on (or take it off) the list dispatch skips; True when it
    comes off."""
    keys = rt.live.keys
    if sample.breaker != "closed":
        why = f"breaker {sample.breaker.replace('_', '-')}"
        if sample.reasons:
            why += f": {sample.reasons[0]}"
        rt.live.redis.hset(keys.unhealthy_nodes, node, why)
        return False
    if sample.level == "CRITICAL":
        first = sample.reasons[0] if sample.reasons else f"score {sample.score}"
        rt.live.redis.hset(keys.unhealthy_nodes, node, f"health CRITICAL: {first}")
        return False
    return bool(rt.live.redis.hdel(keys.unhealthy_nodes, node))


def _store(rt: Runtime, report: SweepReport) -> None:
    keys = rt.live.keys
    if report.nodes:
        rt.live.redis.hset(
            keys.node_health,
            mapping={node: json.dumps(sample.to_dict()) for node, sample in report.nodes.items()},
        )
    add_samples(rt.registry, list(report.nodes.values()))
    # Once an hour is plenty: the thinning and the pruning work in hours and days.
    if rt.live.redis.set(keys.health_prune, 1, nx=True, ex=_PRUNE_EVERY):
        _prune_and_thin(rt)


def _prune_and_thin(rt: Runtime) -> None:
    keys, now = rt.live.keys, time.time()
    cutoff = datetime.fromtimestamp(now, UTC) - timedelta(days=rt.settings.health_retention_days)
    pruned = prune_samples(rt.registry, cutoff)
    if pruned:
        log.info("pruned %d health samples older than %s", pruned, cutoff.date())
    # Thinned up to here already (minute-aligned); without the mark, from the
    # retention's start: thinning again what was thinned deletes nothing.
    done = float(cast(str | None, rt.live.redis.get(keys.health_thinned)) or cutoff.timestamp())
    since = done - done % _THIN_BUCKET
    until = now - _FULL_RESOLUTION - (now % _THIN_BUCKET)
    if until <= since:
        return
    thinned = thin_samples(
        rt.registry,
        datetime.fromtimestamp(since, UTC),
        datetime.fromtimestamp(until, UTC),
        _THIN_BUCKET,
    )
    rt.live.redis.set(keys.health_thinned, until)
    if thinned:
        log.info("thinned %d health samples older than a day to one a minute", thinned)
