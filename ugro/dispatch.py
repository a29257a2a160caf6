"""Dispatch: lease free GPUs to pending jobs and send each to its GPU's queue.

Single-flight: one pass runs at a time across the cluster (a Redis lock). A caller
that finds the lock taken leaves a request flag instead, and the holder runs one
more pass before it lets go, so no request is lost between the two.
"""

from __future__ import annotations

import logging
import secrets
from collections import defaultdict

from ugro.placement import PendingJob, Placement, plan_placements
from ugro.registry import utcnow
from ugro.runtime import Runtime, gpu_json
from ugro.status import JobStatus

log = logging.getLogger(__name__)


def dispatch_pending(rt: Runtime) -> int:
    """Place every pending job that fits now; returns how many were placed."""
    placed = 0
    while True:
        rt.live.request_dispatch()
        lock = rt.live.dispatch_lock()
        if not lock.acquire():
            return placed  # the holder will see our request
        try:
            while rt.live.take_dispatch_request():
                placed += _dispatch_pass(rt)
        finally:
            lock.release()
        if not rt.live.dispatch_requested():
            return placed


def _free_gpus(rt: Runtime) -> tuple[dict[str, list[int]], dict[str, int]]:
    workers = rt.live.workers(max_age=rt.settings.worker_ttl)
    by_node: dict[str, list[int]] = defaultdict(list)
    for worker in workers:
        by_node[worker.node].append(worker.index)
    free: dict[str, list[int]] = {}
    for node, indices in by_node.items():
        holders = rt.live.lease_holders(node, indices)
        free[node] = [i for i in indices if holders[i] is None]
    return free, {node: len(indices) for node, indices in by_node.items()}


def _dispatch_pass(rt: Runtime) -> int:
    free, capacity = _free_gpus(rt)
    if not any(free.values()):
        return 0
    pending = [PendingJob(job_id, gpus, node) for job_id, gpus, node in rt.live.pending()]
    placed = 0
    for placement in plan_placements(pending, free, capacity):
        placed += place(rt, placement)
    return placed


def place(rt: Runtime, placement: Placement) -> bool:
    """Lease the placement's GPUs, mark the job placed and send it to its worker."""
    gpus = list(placement.gpus)
    token = secrets.token_hex(8)
    holder = f"{placement.job_id}|{token}"
    if not rt.live.acquire(placement.node, gpus, holder, rt.settings.placement_ttl):
        return False  # a GPU was taken since we looked; the next pass retries
    placed = rt.transition(
        placement.job_id,
        JobStatus.PLACED,
        expect=[JobStatus.QUEUED],
        node=placement.node,
        gpu_indices=gpu_json(gpus),
        placed_at=utcnow(),
    )
    if not placed:
        # Cancelled or already placed while it sat in the queue: give the GPUs back.
        rt.live.release(placement.node, gpus, holder)
        rt.live.dequeue(placement.job_id)
        return False
    rt.send_job(placement.job_id, token, placement.node, gpus)
    rt.live.dequeue(placement.job_id)
    log.info("placed %s on %s GPUs %s", placement.job_id, placement.node, gpus)
    return True
