"""Dispatch: lease free GPUs to pending jobs and send each to its GPU's queue.

Single-flight: one pass runs at a time across the cluster (a Redis lock). A caller
that finds the lock taken leaves a request flag instead, and the holder runs one
more pass before it lets go, so no request is lost between the two. What a pass
places is ``plan_placements``' decision on what it read (``plan_on``): each job's
GPUs leased (a gang job's members all at once or none), then every job marked
placed in one registry transaction (``Runtime.place_jobs``: on a server database
each statement and each commit is a round trip, and a statement and a commit a
job were most of what a pass cost), and each job sent to its nodes' workers.

A GPU worker whose job just ended asks with its GPU (``WorkerGpu``). When its GPU
is exactly where a pass would place the head of the queue, the script that would
take the lock takes that job for it instead, in the round trip that lets its last
job go (``DispatchState.take_for_gpu``): a special case of the pass, held to
``plan_placements`` by ``tests/integration/test_scheduling_equivalence.py``.
Otherwise it waits a moment to be handed the lock, so that its own pass places its
GPU; not handed it in time, it leaves the flag.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

from ugro.live.dispatch_state import FreedGpu, Snapshot, TakenForGpu
from ugro.live.writes import Writes
from ugro.registry.models import JobRow, utcnow
from ugro.registry.placing import JobPlacement
from ugro.runtime import Runtime, gpu_json
from ugro.scheduling.placement import Placement
from ugro.scheduling.planning import GpuView, plan_on, view_of
from ugro.scheduling.sharing import quota_view, sharing_policy

log = logging.getLogger(__name__)
# How many jobs at the head of the queue a dispatch pass reads first, and how many
# it reads when those would leave GPUs free (a job further back waits for the ones
# before it to start or to hold their nodes).
_HEAD = 8
WINDOW = 64
# How long (s) a GPU worker whose job ended waits to be handed the lock: a pass
# takes milliseconds; one that takes longer runs another for the waiter's GPU.
_HANDOVER_WAIT = 0.25


class ClaimedJob(NamedTuple):
    """A job placed on a worker's own GPU and claimed for it: its worker runs it
    next, without a message."""

    row: JobRow  # as claimed: running, its attempt counted
    token: str  # its lease token
    gpus: list[int]


@dataclass
class WorkerGpu:
    """The GPU of a worker whose job just ended, offered to dispatch as the worker
    asks for a pass: a job placed with that GPU first is handed back in
    ``claimed`` instead of sent through Celery, and the worker runs it next.

    The lease and the claim are those of a sent job; the transport hop is saved,
    and so are a commit and a round trip: the placement and the claim are one
    commit, and Redis hears of the job running in the pass's last round trip. When
    that GPU is where a pass would place the head of the queue, no pass runs at
    all: the script that would take the lock takes the job and its lease instead
    (``DispatchState.take_for_gpu``), then the claim, then one round trip for Redis
    to hear of it running. Should the worker die before the job's process starts,
    no heartbeat renews its lease, and the reconciler declares the attempt lost
    (its retry policy decides what follows), as for a worker that dies while its
    job runs: the window is the pass's last round trip longer than a sent job's,
    whose claim too comes before its process starts. Should it die between the
    take and the claim, the job is still queued in the registry: the reconciler
    queues it again, and its lease lapses.
    """

    node: str
    index: int
    claimed: ClaimedJob | None = None
    # GPUs its ended job let go: more than one, and a pass places on all of them
    # (the head taken for this GPU alone would leave the others idle till a tick).
    freed: int = 1


def dispatch_pending(
    rt: Runtime, worker_gpu: WorkerGpu | None = None, writes: Writes | None = None
) -> int:
    """Place every pending job that fits now; returns how many were placed.
    ``writes`` holds the caller's writes to send first (see ``DispatchState.begin``)."""
    token = secrets.token_hex(8)
    dispatch, max_age = rt.live.dispatch, rt.settings.worker_ttl
    if worker_gpu is None:
        snapshot = dispatch.begin(token, max_age, _HEAD, writes)
    else:
        while True:
            freed = FreedGpu(
                worker_gpu.node, worker_gpu.index, secrets.token_hex(8), rt.settings.lease_ttl
            )
            entered = dispatch.take_for_gpu(
                token,
                max_age,
                _HEAD,
                freed,
                writes,
                wait=_HANDOVER_WAIT,
                # (a quota is the pass's to keep: the script knows nobody's holdings)
                take_head=worker_gpu.freed == 1 and not sharing_policy(rt.settings).caps_gpus,
            )
            if not isinstance(entered, TakenForGpu):
                break
            gpus = [worker_gpu.index]
            if _claim_for_worker(rt, worker_gpu, entered.job_id, freed.lease_token, gpus):
                return 1
            writes = None  # (sent with the first ask)
        snapshot = entered
    if snapshot is None:
        return 0  # the holder will see our request, or nothing waits
    placed = 0
    while True:
        # The Redis side of the pass's placements goes with the lock's release.
        writes = rt.live.redis.pipeline(transaction=True)
        try:
            placed += _dispatch_pass(rt, worker_gpu, snapshot, writes)
        except Exception:
            dispatch.end(token, writes)
            raise
        if not dispatch.end(token, writes):
            return placed
        snapshot = None


def _claim_for_worker(
    rt: Runtime,
    worker_gpu: WorkerGpu,
    job_id: str,
    token: str,
    gpus: list[int],
    writes: Writes | None = None,
) -> bool:
    """Place and claim a queued job for ``worker_gpu``, its ``gpus`` leased under
    ``token``, in one commit (``Runtime.place_and_claim``); its Redis side goes in
    ``writes`` when given, else at once. When it is no longer queued in the
    registry (cancelled as it was taken), or the write fails, its GPUs are given
    back: False, or the error."""
    holder = f"{job_id}|{token}"
    leases = rt.live.leases
    where = {"node": worker_gpu.node, "gpu_indices": gpu_json(gpus), "placed_at": utcnow()}
    pipe = writes if writes is not None else rt.live.redis.pipeline(transaction=True)
    try:
        claimed = rt.place_and_claim(job_id, token, pipe, **where)
    except BaseException:
        leases.release(worker_gpu.node, gpus, holder)
        raise
    if claimed is None:
        leases.release(worker_gpu.node, gpus, holder)
        return False
    if writes is None:
        pipe.execute()
    worker_gpu.claimed = ClaimedJob(claimed, token, gpus)  # its worker runs it next
    log.debug("took %s for %s GPU %s", job_id, worker_gpu.node, worker_gpu.index)
    return True


def _dispatch_pass(
    rt: Runtime, worker_gpu: WorkerGpu | None, snapshot: Snapshot | None, writes: Writes
) -> int:
    """One pass, from ``snapshot`` of the head of the queue when the caller has it;
    its placements' Redis writes are left in ``writes``."""
    # The head of the queue first: its jobs usually take every free GPU. The whole
    # window is read only when GPUs would be left free while more jobs wait, and
    # then the pass is planned anew on it, so the outcome is the window's.
    view: GpuView | None = None
    for limit in (_HEAD, WINDOW):
        if snapshot is None:
            snapshot = rt.live.dispatch.snapshot(rt.settings.worker_ttl, limit)
        elif limit != _HEAD:
            # (the workers and leases as the head's plan saw them: a GPU leased since
            # fails its placement's lease, and that asks for another pass)
            snapshot = snapshot._replace(pending=rt.live.dispatch.head(limit))
        if not snapshot.pending:
            return 0  # nothing waits, or every GPU is leased: no need to ask the registry
        if view is None:
            view = view_of(snapshot.workers, snapshot.holders, rt.registry.held_gpus())
        quotas = None
        if (policy := sharing_policy(rt.settings)).caps_gpus:
            ids = [entry.job_id for entry in snapshot.pending]
            quotas = quota_view(rt.registry, policy, ids)
        now = time.time()
        expected = (
            partial(rt.live.ends.expected_left, now=now) if rt.settings.reserve_by_eta else None
        )
        time_left = partial(rt.live.ends.time_left, now=now)
        plans = plan_on(view, snapshot.pending, time_left, quotas, expected)
        left_free = sum(map(len, view.free.values())) - sum(len(p.gpus) for p in plans)
        if limit == _HEAD and len(snapshot.pending) == limit and left_free > 0:
            continue
        jobs = _by_job(plans)
        # Every job's GPUs leased first, then their placements in one registry
        # transaction: one write a pass, not one a job. A job its worker takes at
        # once is placed and claimed in a statement of its own, after the others: a
        # pass that fails before leaves no job claimed for a worker it never reaches.
        mine = next((m for m in jobs if _taken_by_worker(m, worker_gpu) is not None), None)
        leased = [job for m in jobs if m is not mine and (job := _lease(rt, m)) is not None]
        placed = _write_placements(rt, leased, writes)
        if mine is not None:
            placed += place(rt, mine[0], worker_gpu, writes)
        return placed
    return 0


def _by_job(plans: list[Placement]) -> list[list[Placement]]:
    """The placements of each job, in order: a gang job has one a member."""
    jobs: dict[str, list[Placement]] = {}
    for placement in plans:
        jobs.setdefault(placement.job_id, []).append(placement)
    return list(jobs.values())


class _Leased(NamedTuple):
    """A job's placement whose GPUs are leased, not yet written to the registry."""

    job_id: str
    members: list[Placement]  # a gang job's: one a node
    token: str  # its lease token, which its worker's claim must name

    @property
    def holder(self) -> str:
        return f"{self.job_id}|{self.token}"


def _lease(rt: Runtime, members: list[Placement]) -> _Leased | None:
    """Lease every member's GPUs of a job's placement, all or none. None when a GPU
    was taken since the pass looked (by a job placed as it was submitted): another
    pass is asked for, on what is free then."""
    job = _Leased(members[0].job_id, members, secrets.token_hex(8))
    taken: list[Placement] = []
    for member in members:
        gpus = list(member.gpus)
        if not rt.live.leases.acquire(member.node, gpus, job.holder, rt.settings.placement_ttl):
            _give_back(rt, job._replace(members=taken))
            rt.live.dispatch.ask()
            return None
        taken.append(member)
    return job


def _give_back(rt: Runtime, job: _Leased) -> None:
    for member in job.members:
        rt.live.leases.release(member.node, list(member.gpus), job.holder)


def _write_placements(rt: Runtime, leased: list[_Leased], writes: Writes | None) -> int:
    """Mark the ``leased`` jobs placed in one registry transaction and send each
    one placed to its workers (its Redis side in ``writes`` when given, else at
    once); returns how many were placed. A job that is no longer queued gives its
    GPUs back; should the write fail, they all do."""
    if not leased:
        return 0
    rows = [JobPlacement(job.job_id, _columns(job)) for job in leased]
    pipe = writes if writes is not None else rt.live.redis.pipeline(transaction=True)
    try:
        placed = rt.place_jobs(rows, pipe)
    except BaseException:
        for job in leased:  # (no lease outlives a placement that was not written)
            _give_back(rt, job)
        raise
    for job, took in zip(leased, placed, strict=True):
        if not took:
            # Cancelled or already placed while it sat in the queue: give the GPUs
            # back, and look again, for a job queued while they looked taken.
            _give_back(rt, job)
            rt.live.dequeue(job.job_id)
            rt.live.dispatch.ask()
            continue
        gang = len(job.members) > 1  # (each member's message names its rank)
        for member in job.members:
            rank = member.rank if gang else None
            rt.send_job(job.job_id, job.token, member.node, list(member.gpus), pipe, rank)
        # (debug: a line per job in the worker's log costs a sweep of short jobs more
        # than its Redis round trips; the job's console.log says where it started)
        log.debug("placed %s on %s", job.job_id, [(m.node, m.gpus) for m in job.members])
    if writes is None:
        pipe.execute()
    return sum(placed)


def _columns(job: _Leased) -> dict[str, Any]:
    """A placement's columns in the registry: its first member's node and GPUs, and
    a gang job's every member (what each member's worker claims, and Redis shows)."""
    first = job.members[0]
    # placement_token: what its worker's claim must name
    columns = {"placement_token": job.token, "node": first.node}
    columns["gpu_indices"] = gpu_json(first.gpus)
    if len(job.members) > 1:
        columns["members"] = json.dumps([[m.node, list(m.gpus)] for m in job.members])
    return {**columns, "placed_at": utcnow()}


def _taken_by_worker(members: list[Placement], worker_gpu: WorkerGpu | None) -> WorkerGpu | None:
    """``worker_gpu`` when a job of these ``members`` goes first on its GPU and that
    worker has taken no job yet: it takes this one at once."""
    if worker_gpu is None or worker_gpu.claimed is not None or len(members) != 1:
        return None
    on = (members[0].node, members[0].gpus[0])
    return worker_gpu if (worker_gpu.node, worker_gpu.index) == on else None


def place(
    rt: Runtime,
    placement: Placement,
    worker_gpu: WorkerGpu | None = None,
    writes: Writes | None = None,
) -> bool:
    """Lease the placement's GPUs, mark the job placed and send it to its worker, or,
    on ``worker_gpu``, claim it for that worker. With ``writes``, the Redis side of
    it (status, message) is left there for the caller to execute."""
    worker = _taken_by_worker([placement], worker_gpu)
    if worker is None:
        job = _lease(rt, [placement])
        return job is not None and _write_placements(rt, [job], writes) == 1
    gpus, token = list(placement.gpus), secrets.token_hex(8)
    # A job its worker takes at once is claimed within moments: its leases start in
    # the running window, which the heartbeat renews.
    holder = f"{placement.job_id}|{token}"
    if not rt.live.leases.acquire(placement.node, gpus, holder, rt.settings.lease_ttl):
        rt.live.dispatch.ask()  # (taken since the pass looked, as in ``_lease``)
        return False
    if _claim_for_worker(rt, worker, placement.job_id, token, gpus, writes):
        return True
    # Cancelled or placed while it sat in the queue (its GPUs are given back).
    rt.live.dequeue(placement.job_id)
    rt.live.dispatch.ask()
    return False
