"""Why a queued job is still waiting, in one sentence a person can act on. Pure."""

from __future__ import annotations

from ugro.scheduling.planning import GpuView


def why_waiting(
    gpus: int,
    node: str | None,
    view: GpuView,
    ahead: int,
    ready_in: float | None,
    nodes_wanted: int = 1,
) -> str:
    """The reason a job asking ``gpus`` GPUs (on ``node``, if pinned; on each of
    ``nodes_wanted`` nodes, for a gang job) waits.

    Args:
        view: the GPUs as dispatch sees them now.
        ahead: queued jobs that go before this one.
        ready_in: seconds of retry backoff left, when the job is waiting one out.
    """
    if ready_in is not None:
        return f"retry backoff: may start in {max(0.0, ready_in):.0f} s"
    if not view.capacity:
        return "no GPU worker is up: start them with `ugro up` or `ugro worker`"
    nodes = [node] if node else sorted(view.capacity)
    if node and node not in view.capacity:
        return f"node {node!r} has no GPU worker up"
    if nodes_wanted > 1:
        return _why_gang_waits(gpus, nodes_wanted, view, ahead)
    largest = max(view.capacity[n] for n in nodes)
    if gpus > largest:
        return f"needs {gpus} GPUs on one node; the largest node up has {largest}"
    blocked = [
        f"GPU {i} on {n}: {why}"
        for n in nodes
        for i, why in sorted(view.blocked.get(n, {}).items())
    ]
    free = ", ".join(f"{n} {len(view.free.get(n, []))}" for n in nodes)
    reason = f"waiting for {gpus} free GPU(s) on one node (free now: {free})"
    if ahead:
        reason += f"; {ahead} job(s) ahead in the queue"
    if blocked:
        reason += "; " + "; ".join(blocked)
    return reason


def why_preempting(victims: list[str]) -> str:
    """The reason a job that stopped others waits: their stops."""
    return f"preempting: {', '.join(victims)} stopping to free their GPUs"


def _why_gang_waits(gpus: int, nodes_wanted: int, view: GpuView, ahead: int) -> str:
    big_enough = [n for n in sorted(view.capacity) if view.capacity[n] >= gpus]
    if len(big_enough) < nodes_wanted:
        return (
            f"needs {gpus} GPUs on each of {nodes_wanted} nodes; {len(big_enough)} node(s)"
            f" up have that many"
        )
    ready = [n for n in big_enough if len(view.free.get(n, [])) >= gpus]
    free = ", ".join(f"{n} {len(view.free.get(n, []))}" for n in big_enough)
    reason = (
        f"waiting for {gpus} free GPU(s) on each of {nodes_wanted} nodes, all at once"
        f" ({len(ready)} ready; free now: {free})"
    )
    if ahead:
        reason += f"; {ahead} job(s) ahead in the queue"
    return reason
