"""What `ugro nodes` shows of each node: its health, its breaker and its GPUs, as
dispatch sees them now."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ugro.runtime import Runtime


def node_view(rt: Runtime) -> list[dict[str, Any]]:
    """Each node: its health (score, level, system readings, last check), its
    breaker as it stands now (``breaker``; ``breaker_open_until``, when an open
    breaker's window ends, else None) and its GPUs (worker up, free, held by a
    job, or blocked, with readings; ``held_idle_since``: since when the job
    holding it has held it idle, once flagged)."""
    from ugro.health.sweep import breaker_for, latest_health
    from ugro.scheduling.planning import gpu_view

    view = gpu_view(rt)
    workers = rt.live.workers(max_age=rt.settings.worker_ttl)
    health = latest_health(rt)
    breaker = breaker_for(rt)
    found: dict[str, dict[str, Any]] = {}

    def entry(node: str, host: str | None) -> dict[str, Any]:
        if node not in found:
            status = breaker.status(node)
            until = None
            if status.state == "open" and status.opened_at is not None:
                until = datetime.fromtimestamp(status.opened_at + breaker.window, UTC)
            found[node] = {
                "node": node,
                "host": host,
                "gpus": [],
                "health": health.get(node),
                "breaker": status.state,
                "breaker_open_until": until.isoformat() if until else None,
            }
        return found[node]

    for worker in workers:
        job = view.held.get(worker.node, {}).get(worker.index)
        state = "blocked" if worker.blocked else ("busy" if job else "free")
        idle = held_idle(health.get(worker.node), worker.index, job)
        entry(worker.node, worker.host)["gpus"].append(
            {
                "index": worker.index,
                "state": state,
                "job": job,
                "blocked": worker.blocked,
                "last_seen": worker.seen,
                "reading": worker.gpu,
                "held_idle_since": idle,
            }
        )
    for node in health:  # nodes with no GPU worker up: probed, or gone quiet
        entry(node, None)
    return [found[node] for node in sorted(found)]


def held_idle(health: dict[str, Any] | None, index: int, job: str | None) -> str | None:
    """When the GPU, held by ``job``, began to read idle, as the last sweep
    flagged it (ISO time; ``ugro.health.idle``), or None."""
    for gpu in (health or {}).get("gpus") or []:
        if gpu.get("index") == index and gpu.get("held_idle") and gpu.get("job") == job:
            since = gpu.get("idle_since")
            return None if since is None else datetime.fromtimestamp(since, UTC).isoformat()
    return None
