"""Dispatch: lease free GPUs to pending jobs and send each to its GPU's queue.

Single-flight: one pass runs at a time across the cluster (a Redis lock). A caller
that finds the lock taken leaves a request flag instead, and the holder runs one
more pass before it lets go, so no request is lost between the two. A GPU worker
whose job just ended first takes the head of the queue for its own GPU when that
is where a pass would place it (a one-GPU job, nothing before it, no pass under
way: ``DispatchState.take_here``), in the round trip that lets its last job go;
otherwise it waits a moment to be handed the lock, so that its own pass places its
GPU (see ``LocalSlot``); not handed it in time, it leaves the flag.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from ugro.jobs.lifecycle import JobStatus
from ugro.live.dispatch_state import HereAsk, Snapshot, TakenHere
from ugro.live.worker_info import WorkerInfo
from ugro.registry.models import JobRow, utcnow
from ugro.runtime import Runtime, gpu_json
from ugro.scheduling.placement import PendingJob, Placement, plan_placements

log = logging.getLogger(__name__)
# How many jobs at the head of the queue a dispatch pass reads first, and how many
# it reads when those would leave GPUs free.
_HEAD = 8
_WINDOW = 64
# How long (s) a GPU worker whose job ended waits to be handed the lock: a pass
# takes milliseconds; one that takes longer runs another for the waiter's GPU.
_HANDOVER_WAIT = 0.25


@dataclass
class LocalSlot:
    """A GPU worker's own GPU, offered to dispatch as it asks for a pass: a job placed
    with that GPU first is handed back in ``taken``, claimed, instead of sent through
    Celery, and the worker runs it next. The lease and the claim are those of a sent
    job; the transport hop is saved, and so are a commit and a round trip: the
    placement and the claim are one commit, and Redis hears of the job running in
    the pass's last round trip. When the head of the queue is a one-GPU job that may
    run here, no pass runs at all: the script that would take the lock takes the job
    and its lease instead (``DispatchState.take_here``), then the claim, then one round
    trip for Redis to hear of it running. Should the worker die before the job's
    process starts, no heartbeat renews its lease, and the reconciler declares the
    attempt lost (its retry policy decides what follows), as for a worker that dies
    while its job runs: the window is the pass's last round trip longer than a sent
    job's, whose claim too comes before its process starts. Should it die between
    the take and the claim, the job is still queued in the registry: the reconciler
    queues it again, and its lease lapses.
    """

    node: str
    index: int
    # (the claimed row, token, gpus) of the job placed here
    taken: tuple[JobRow, str, list[int]] | None = None


def dispatch_pending(rt: Runtime, local: LocalSlot | None = None, writes: Any = None) -> int:
    """Place every pending job that fits now; returns how many were placed.
    ``writes``, a transaction pipeline, holds the caller's writes to send first
    (see ``DispatchState.begin``)."""
    token = secrets.token_hex(8)
    dispatch, max_age = rt.live.dispatch, rt.settings.worker_ttl
    if local is None:
        snapshot = dispatch.begin(token, max_age, _HEAD, writes)
    else:
        while True:
            here = HereAsk(local.node, local.index, secrets.token_hex(8), rt.settings.lease_ttl)
            entered = dispatch.take_here(token, max_age, _HEAD, here, writes, wait=_HANDOVER_WAIT)
            if not isinstance(entered, TakenHere):
                break
            if _claim_here(rt, local, entered.job_id, here.token):
                return 1
            writes = None  # (sent with the first ask)
        snapshot = entered
    if snapshot is None:
        return 0  # the holder will see our request, or nothing waits
    placed = 0
    while True:
        # The pass's last placement is written with the lock's release.
        writes = rt.live.redis.pipeline(transaction=True)
        try:
            placed += _dispatch_pass(rt, local, snapshot, writes)
        except Exception:
            rt.live.dispatch.end(token, writes)
            raise
        if not rt.live.dispatch.end(token, writes):
            return placed
        snapshot = None


def _claim_here(rt: Runtime, local: LocalSlot, job_id: str, token: str) -> bool:
    """Claim a job that ``DispatchState.take_here`` took for ``local``'s GPU, as a
    pass's placement there would (``place``); when it is no longer queued in the
    registry (cancelled as it was taken), give the GPU back and return False."""
    gpus = [local.index]
    where = {"node": local.node, "gpu_indices": gpu_json(gpus), "placed_at": utcnow()}
    writes = rt.live.redis.pipeline(transaction=True)
    try:
        claimed = rt.place_and_claim(job_id, token, writes, **where)
    except BaseException:
        rt.live.leases.release(local.node, gpus, f"{job_id}|{token}")
        raise
    if claimed is None:
        rt.live.leases.release(local.node, gpus, f"{job_id}|{token}")
        return False
    writes.execute()
    local.taken = (claimed, token, gpus)
    log.debug("took %s for %s GPU %s", job_id, local.node, local.index)
    return True


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


def _busy_ends(rt: Runtime, view: GpuView) -> dict[str, list[float | None]]:
    """For each node, how long each held GPU's job may still run (None: unknown)."""
    jobs = sorted({job for held in view.held.values() for job in held.values()})
    left = rt.live.time_left(jobs, time.time()) if jobs else {}
    return {node: [left.get(job) for job in held.values()] for node, held in view.held.items()}


def _dispatch_pass(
    rt: Runtime, local: LocalSlot | None, snapshot: Snapshot | None, writes: Any
) -> int:
    """One pass, from ``snapshot`` of the head of the queue when the caller has it;
    the last placement's Redis writes are left in ``writes``."""
    # The head of the queue first: its jobs usually take every free GPU. The whole
    # window is read only when GPUs would be left free while more jobs wait, and
    # then the pass is planned anew on it, so the outcome is the window's.
    for limit in (_HEAD, _WINDOW):
        if snapshot is None or limit != _HEAD:
            snapshot = rt.live.dispatch.snapshot(rt.settings.worker_ttl, limit)
        workers, holders, entries = snapshot
        if not entries:
            return 0  # nothing waits, or every GPU is leased: no need to ask the registry
        view = view_of(workers, holders, rt.registry.held_gpus())
        if not any(view.free.values()):
            return 0
        pending = [PendingJob(*fields) for fields in entries]
        most_free = max(len(free) for free in view.free.values())
        # Backfill estimates cost a read per running job: only when a job must wait.
        ends = _busy_ends(rt, view) if any(job.gpus > most_free for job in pending) else None
        plans = plan_placements(pending, view.free, view.capacity, ends)
        left_free = sum(map(len, view.free.values())) - sum(len(p.gpus) for p in plans)
        if limit == _HEAD and len(entries) == limit and left_free > 0:
            continue
        last = len(plans) - 1
        return sum(
            place(rt, placement, local, writes if i == last else None)
            for i, placement in enumerate(plans)
        )
    return 0


def place(
    rt: Runtime, placement: Placement, local: LocalSlot | None = None, writes: Any = None
) -> bool:
    """Lease the placement's GPUs, mark the job placed and send it to its worker, or,
    on ``local``'s GPU, claim it for that worker. With ``writes`` (a transaction
    pipeline), the Redis side of it (status, message) is left there for the caller
    to execute."""
    gpus = list(placement.gpus)
    token = secrets.token_hex(8)
    holder = f"{placement.job_id}|{token}"
    here = (
        local is not None
        and local.taken is None
        and (local.node, local.index) == (placement.node, gpus[0])
    )
    # A job its worker takes at once is claimed within moments: its leases start in
    # the running window, which the heartbeat renews.
    ttl = rt.settings.lease_ttl if here else rt.settings.placement_ttl
    if not rt.live.leases.acquire(placement.node, gpus, holder, ttl):
        # A GPU was taken since we looked (by a job placed as it was submitted):
        # another pass, on what is free now.
        rt.live.dispatch.ask()
        return False
    where = {"node": placement.node, "gpu_indices": gpu_json(gpus), "placed_at": utcnow()}
    claimed: JobRow | None = None
    if here:
        pipe = writes if writes is not None else rt.live.redis.pipeline(transaction=True)
        claimed = rt.place_and_claim(placement.job_id, token, pipe, **where)
        if claimed is not None and writes is None:
            pipe.execute()
        placed = claimed is not None
    else:
        # placement_token: what its worker's claim must name
        placed = rt.transition(
            placement.job_id,
            JobStatus.PLACED,
            expect=[JobStatus.QUEUED],
            writes=writes,
            placement_token=token,
            **where,
        )
    if not placed:
        # Cancelled or already placed while it sat in the queue: give the GPUs back,
        # and look again, for a job queued while they looked taken.
        rt.live.leases.release(placement.node, gpus, holder)
        rt.live.dequeue(placement.job_id)
        rt.live.dispatch.ask()
        return False
    if claimed is not None and local is not None:
        local.taken = (claimed, token, gpus)  # its worker runs it next
    else:
        # (placed: out of the queue)
        rt.send_job(placement.job_id, token, placement.node, gpus, writes=writes)
    # (debug: a line per job in the worker's log costs a sweep of short jobs more
    # than its Redis round trips; the job's console.log says where it started)
    log.debug("placed %s on %s GPUs %s", placement.job_id, placement.node, gpus)
    return True
