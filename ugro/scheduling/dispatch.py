"""Dispatch: lease free GPUs to pending jobs and send each to its GPU's queue.

Single-flight: one pass runs at a time across the cluster (a Redis lock). A caller
that finds the lock taken leaves a request flag instead, and the holder runs one
more pass before it lets go, so no request is lost between the two. What a pass
places is ``plan_placements``' decision on what it read (``plan_on``): a gang job's
members all at once or none (``place_gang``), each sent to its node's worker.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

from ugro.jobs.lifecycle import JobStatus
from ugro.live.dispatch_state import FreedGpu, PendingEntry, Snapshot, TakenForGpu
from ugro.live.worker_info import WorkerInfo
from ugro.live.writes import Writes
from ugro.registry.models import JobRow, utcnow
from ugro.runtime import Runtime, gpu_json
from ugro.scheduling.placement import PendingJob, Placement, plan_placements
from ugro.scheduling.sharing import QuotaView, quota_view, sharing_policy

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
            if _claim_for_worker(rt, worker_gpu, entered.job_id, freed.lease_token):
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
            placed += _dispatch_pass(rt, worker_gpu, snapshot, writes)
        except Exception:
            dispatch.end(token, writes)
            raise
        if not dispatch.end(token, writes):
            return placed
        snapshot = None


def _claim_for_worker(rt: Runtime, worker_gpu: WorkerGpu, job_id: str, token: str) -> bool:
    """Claim a job that ``DispatchState.take_for_gpu`` took for ``worker_gpu``, as a
    pass's placement there would (``place``); when it is no longer queued in the
    registry (cancelled as it was taken), give the GPU back and return False."""
    gpus = [worker_gpu.index]
    holder = f"{job_id}|{token}"
    leases = rt.live.leases
    where = {"node": worker_gpu.node, "gpu_indices": gpu_json(gpus), "placed_at": utcnow()}
    writes = rt.live.redis.pipeline(transaction=True)
    try:
        claimed = rt.place_and_claim(job_id, token, writes, **where)
    except BaseException:
        leases.release(worker_gpu.node, gpus, holder)
        raise
    if claimed is None:
        leases.release(worker_gpu.node, gpus, holder)
        return False
    writes.execute()
    worker_gpu.claimed = ClaimedJob(claimed, token, gpus)
    log.debug("took %s for %s GPU %s", job_id, worker_gpu.node, worker_gpu.index)
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


def plan_on(
    view: GpuView,
    pending: Sequence[PendingEntry],
    time_left: Callable[[list[str]], dict[str, float | None]],
    quotas: QuotaView | None = None,
    expected_left: Callable[[list[str]], dict[str, float | None]] | None = None,
) -> list[Placement]:
    """What a pass places: ``plan_placements`` on the free GPUs of ``view`` for the
    ``pending`` jobs, in queue order. ``time_left`` says how long each of some
    running jobs may still run (seconds, None: unknown), and ``expected_left`` how
    long each is expected to (from its ETA); they are asked only when a job waits
    while GPUs stay free (its reservation, and what may be backfilled around it,
    need them). ``quotas``: the GPU quotas, when some user or group has one."""
    if not pending or not any(view.free.values()):
        return []
    accounts = quotas.accounts if quotas is not None else {}
    jobs = [
        PendingJob(e.job_id, e.gpus, e.node, e.timeout, e.nodes, accounts.get(e.job_id, ()))
        for e in pending
    ]
    headroom = quotas.headroom if quotas is not None else None
    plans = plan_placements(jobs, view.free, view.capacity, None, headroom)
    placed = {p.job_id for p in plans}
    if len(placed) == len(jobs):
        return plans  # (every job placed: no reservation was made, no end was needed)
    # Without the ends, a job that cannot start reserves nodes blindly (every busy
    # GPU counted free at once): what is placed after it went around that blind
    # reservation, not the one the ends make, and what waits might have been
    # backfilled around the real one. So the plan stands only when it took every
    # free GPU for a head of the queue, no job before a placed one left waiting.
    free_left = sum(map(len, view.free.values())) - sum(len(p.gpus) for p in plans)
    if free_left == 0 and _placed_a_head(jobs, placed):
        return plans
    held = sorted({job for by_index in view.held.values() for job in by_index.values()})

    def on_nodes(left: dict[str, float | None]) -> dict[str, list[float | None]]:
        return {
            node: [left.get(j) for j in by_index.values()] for node, by_index in view.held.items()
        }

    ends = on_nodes(time_left(held) if held else {})
    expected = on_nodes(expected_left(held) if held else {}) if expected_left else None
    return plan_placements(jobs, view.free, view.capacity, ends, headroom, expected)


def _placed_a_head(jobs: Sequence[PendingJob], placed: set[str]) -> bool:
    """Whether the jobs ``placed`` are the first of ``jobs``."""
    return all(job.job_id in placed for job in jobs[: len(placed)])


def _dispatch_pass(
    rt: Runtime, worker_gpu: WorkerGpu | None, snapshot: Snapshot | None, writes: Writes
) -> int:
    """One pass, from ``snapshot`` of the head of the queue when the caller has it;
    the last placement's Redis writes are left in ``writes``."""
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
        expected = partial(rt.live.expected_left, now=now) if rt.settings.reserve_by_eta else None
        time_left = partial(rt.live.time_left, now=now)
        plans = plan_on(view, snapshot.pending, time_left, quotas, expected)
        left_free = sum(map(len, view.free.values())) - sum(len(p.gpus) for p in plans)
        if limit == _HEAD and len(snapshot.pending) == limit and left_free > 0:
            continue
        jobs = _by_job(plans)
        last = len(jobs) - 1
        return sum(
            place(rt, members[0], worker_gpu, writes if i == last else None)
            if len(members) == 1
            else place_gang(rt, members, writes if i == last else None)
            for i, members in enumerate(jobs)
        )
    return 0


def _by_job(plans: list[Placement]) -> list[list[Placement]]:
    """The placements of each job, in order: a gang job has one a member."""
    jobs: dict[str, list[Placement]] = {}
    for placement in plans:
        jobs.setdefault(placement.job_id, []).append(placement)
    return list(jobs.values())


def place_gang(rt: Runtime, members: list[Placement], writes: Writes | None = None) -> bool:
    """Lease every member's GPUs of a gang job, mark it placed and send each member
    to its worker, all or nothing (with ``writes``: the Redis side of it is left
    there for the caller to execute). Each member's worker claims its part under
    the same lease token (``ugro.registry.members``)."""
    job_id = members[0].job_id
    token = secrets.token_hex(8)
    holder = f"{job_id}|{token}"
    leases = rt.live.leases
    taken: list[Placement] = []

    def give_back() -> None:
        for member in taken:
            leases.release(member.node, list(member.gpus), holder)

    for member in members:
        if not leases.acquire(member.node, list(member.gpus), holder, rt.settings.placement_ttl):
            give_back()  # a GPU was taken since we looked: another pass
            rt.live.dispatch.ask()
            return False
        taken.append(member)
    first = members[0]
    placement = [[m.node, list(m.gpus)] for m in members]
    try:
        placed = rt.transition(
            job_id,
            JobStatus.PLACED,
            expect=[JobStatus.QUEUED],
            writes=writes,
            placement_token=token,
            node=first.node,
            gpu_indices=gpu_json(first.gpus),
            members=json.dumps(placement),
            placed_at=utcnow(),
        )
    except BaseException:
        give_back()
        raise
    if not placed:
        give_back()
        rt.live.dequeue(job_id)
        rt.live.dispatch.ask()
        return False
    pipe = writes if writes is not None else rt.live.redis.pipeline(transaction=True)
    for member in members:
        rt.send_job(job_id, token, member.node, list(member.gpus), writes=pipe, rank=member.rank)
    if writes is None:
        pipe.execute()
    log.debug("placed %s on %s", job_id, placement)
    return True


def place(
    rt: Runtime,
    placement: Placement,
    worker_gpu: WorkerGpu | None = None,
    writes: Writes | None = None,
) -> bool:
    """Lease the placement's GPUs, mark the job placed and send it to its worker, or,
    on ``worker_gpu``, claim it for that worker. With ``writes``, the Redis side of
    it (status, message) is left there for the caller to execute."""
    gpus = list(placement.gpus)
    token = secrets.token_hex(8)
    holder = f"{placement.job_id}|{token}"
    leases = rt.live.leases
    for_worker = (
        worker_gpu is not None
        and worker_gpu.claimed is None
        and (worker_gpu.node, worker_gpu.index) == (placement.node, gpus[0])
    )
    # A job its worker takes at once is claimed within moments: its leases start in
    # the running window, which the heartbeat renews.
    ttl = rt.settings.lease_ttl if for_worker else rt.settings.placement_ttl
    if not leases.acquire(placement.node, gpus, holder, ttl):
        # A GPU was taken since we looked (by a job placed as it was submitted):
        # another pass, on what is free now.
        rt.live.dispatch.ask()
        return False
    where: dict[str, Any] = {
        "node": placement.node,
        "gpu_indices": gpu_json(gpus),
        "placed_at": utcnow(),
    }
    claimed: JobRow | None = None
    if for_worker:
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
        leases.release(placement.node, gpus, holder)
        rt.live.dequeue(placement.job_id)
        rt.live.dispatch.ask()
        return False
    if claimed is not None and worker_gpu is not None:
        worker_gpu.claimed = ClaimedJob(claimed, token, gpus)  # its worker runs it next
    else:
        # (placed: out of the queue)
        rt.send_job(placement.job_id, token, placement.node, gpus, writes=writes)
    # (debug: a line per job in the worker's log costs a sweep of short jobs more
    # than its Redis round trips; the job's console.log says where it started)
    log.debug("placed %s on %s GPUs %s", placement.job_id, placement.node, gpus)
    return True
