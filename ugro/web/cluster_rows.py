"""What the dashboard shows of the cluster: every node's GPUs (free, busy with
which job, blocked by what), each node's health with a chart of its recent
samples, and the queue in the order placement takes it, each job with why it
waits. Read from Redis (as `ugro nodes` and dispatch see it) and the registry."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from ugro.client import Client
from ugro.jobs.lifecycle import JobStatus
from ugro.scheduling.placement import PendingJob, plan_queue
from ugro.web.job_rows import ProgressCache, rows_by_id

#: A GPU leased to a job and below this utilisation (percent) is shown idle.
IDLE_UTILISATION = 5.0
#: Points a node's chart is thinned to.
_CHART_POINTS = 240
#: Waiting jobs shown on the queue page.
QUEUE_LIMIT = 500


def gpu_grid(client: Client, cache: ProgressCache) -> list[dict[str, Any]]:
    """Each node with its GPUs: ``state`` free, busy or blocked; the job holding a
    busy one with its progress; what blocks a blocked one; the last reading; and
    ``idle`` for a GPU leased to a job that is not using it."""
    nodes = client.nodes()
    held = {gpu["job"] for node in nodes for gpu in node["gpus"] if gpu["job"]}
    jobs = {row["id"]: row for row in rows_by_id(client, sorted(held), cache)}
    grid = []
    for node in nodes:
        gpus = []
        for gpu in node["gpus"]:
            reading = gpu.get("reading") or {}
            job = jobs.get(gpu["job"]) if gpu["job"] else None
            utilisation = reading.get("utilization")
            idle = bool(job) and utilisation is not None and utilisation < IDLE_UTILISATION
            gpus.append(
                {
                    "index": gpu["index"],
                    "state": gpu["state"],
                    "blocked": gpu["blocked"],
                    "job": gpu["job"],
                    "job_name": job["name"] if job else None,
                    "percent": job["percent"] if job else None,
                    "utilization": utilisation,
                    "memory_used_mb": reading.get("memory_used_mb"),
                    "memory_total_mb": reading.get("memory_total_mb"),
                    "temperature_c": reading.get("temperature_c"),
                    "idle": idle,
                }
            )
        grid.append({"node": node["node"], "breaker": node["breaker"], "gpus": gpus})
    return grid


def node_rows(client: Client, hours: float = 3.0) -> list[dict[str, Any]]:
    """Each node: its health score, level and findings (the last sweep's), its
    breaker with the time left while open, and its samples of the last ``hours``
    thinned to a chart's points (score, CPU, memory, mean GPU utilisation)."""
    since = datetime.now(UTC) - timedelta(hours=hours)
    history: dict[str, list[list[Any]]] = {}
    for sample in client.node_history(since):
        utils = [g.utilization for g in sample.gpus if g.utilization is not None]
        gpu = sum(utils) / len(utils) if utils else None
        point = [sample.at.timestamp(), sample.score, sample.cpu_percent, sample.memory_percent]
        history.setdefault(sample.node, []).append([*point, gpu])
    now = time.time()
    found = []
    for node in client.nodes():
        health = cast(dict[str, Any], node["health"] or {})
        until = node["breaker_open_until"]
        left = None
        if until is not None:
            left = max(0.0, datetime.fromisoformat(until).timestamp() - now)
        found.append(
            {
                "node": node["node"],
                "host": node["host"],
                "score": health.get("score"),
                "level": health.get("level"),
                "reasons": health.get("reasons") or [],
                "checked_at": health.get("at"),
                "cpu_percent": health.get("cpu_percent"),
                "memory_percent": health.get("memory_percent"),
                "disk_percent": health.get("disk_percent"),
                "breaker": node["breaker"],
                "breaker_seconds_left": left,
                "gpus": len(node["gpus"]),
                "history": _thin(history.get(node["node"], [])),
            }
        )
    return found


def _thin(points: list[list[Any]]) -> list[list[Any]]:
    """At most ``_CHART_POINTS`` points, evenly taken, the last one kept."""
    if len(points) <= _CHART_POINTS:
        return points
    step = len(points) / _CHART_POINTS
    return [points[int(i * step)] for i in range(_CHART_POINTS - 1)] + [points[-1]]


def queue_rows(client: Client) -> dict[str, Any]:
    """The waiting jobs in the order placement takes them (priority, then fair
    share and submission, as the pending queue holds them), each with why it
    waits and what the next pass would do with it: place it, or hold nodes for it
    (its reservation); then those waiting out a retry backoff, then those held
    back (dependencies, an array's slots)."""
    from ugro.scheduling.explain import why_preempting, why_waiting
    from ugro.scheduling.planning import gpu_view
    from ugro.scheduling.sharing import quota_reason, quota_view, sharing_policy
    from ugro.scheduling.workflow import why_held

    rt = client.rt
    live = rt.live
    pending = live.pending(limit=QUEUE_LIMIT)
    view = gpu_view(rt)
    holders = sorted({job for by_index in view.held.values() for job in by_index.values()})
    left = live.ends.time_left(holders, time.time()) if holders else {}
    ends = {node: [left.get(job) for job in held.values()] for node, held in view.held.items()}
    policy = sharing_policy(rt.settings)
    quotas = None
    if policy.caps_gpus:
        quotas = quota_view(rt.registry, policy, [entry.job_id for entry in pending])
    accounts = quotas.accounts if quotas is not None else {}
    jobs = [
        PendingJob(e.job_id, e.gpus, e.node, e.timeout, e.nodes, accounts.get(e.job_id, ()))
        for e in pending
    ]
    headroom = quotas.headroom if quotas is not None else None
    plan = plan_queue(jobs, view.free, view.capacity, ends, headroom, whole_queue=True)
    placed: dict[str, list[str]] = {}
    for placement in plan.placements:
        placed.setdefault(placement.job_id, []).append(placement.node)
    delayed = cast(
        list[tuple[str, float]],
        live.redis.zrange(live.keys.delayed, 0, QUEUE_LIMIT - 1, withscores=True),
    )
    held_rows = [
        row
        for row in rt.registry.list_jobs(statuses=[JobStatus.QUEUED], limit=QUEUE_LIMIT * 4)
        if row.hold is not None
    ][:QUEUE_LIMIT]
    ids = [entry.job_id for entry in pending] + [str(job_id) for job_id, _ in delayed]
    rows = {row.id: row for row in rt.registry.list_jobs(ids=ids)} if ids else {}
    now = live_time(client)

    def shown(job_id: str, position: int | None, why: str) -> dict[str, Any]:
        row = rows.get(job_id)
        return {
            "id": job_id,
            "position": position,
            "name": row.name if row else None,
            "user": row.user if row else None,
            "priority": row.priority if row else None,
            "gpus": row.gpus if row else None,
            "created_at": row.created_at.isoformat() if row else None,
            "why": why,
            "next_pass": placed.get(job_id),
            "holds": [
                {"node": h.node, "starts_in": h.starts_in} for h in plan.held.get(job_id, [])
            ],
        }

    waiting = []
    preempting = rt.live.preemption.preempting()
    for position, entry in enumerate(pending):
        row = rows.get(entry.job_id)
        why = None
        if row is not None and entry.job_id in plan.over_quota:
            why = quota_reason(rt.registry, rt.settings, row.user, row.group_name, entry.gpus)
        if why is None and entry.job_id == preempting:
            victims = rt.live.preemption.stopping_for(entry.job_id)
            why = why_preempting(victims) if victims else None
        if why is None:
            why = why_waiting(entry.gpus, entry.node, view, position, None, entry.nodes)
        waiting.append(shown(entry.job_id, position, why))
    backoff = [
        shown(str(job_id), None, f"retry backoff: may start in {max(0.0, score - now):.0f} s")
        for job_id, score in delayed
    ]
    held = []
    for row in held_rows:
        rows[row.id] = row
        held.append(shown(row.id, None, why_held(rt, row.id, cast(str, row.hold))))
    return {"waiting": waiting, "backoff": backoff, "held": held}


def live_time(client: Client) -> float:
    """Now by Redis's clock, the one retry backoffs are written on."""
    from ugro.live.clock import server_time

    return server_time(client.rt.live.redis)
