"""Every route that places a job chooses what the pure placement function chooses.

A dispatch pass places what ``plan_on`` (``plan_placements`` fed what the pass reads)
returns. Two other routes place a job without a pass, and each is held to it here on
hundreds of random snapshots per run, written into a real Redis:

- **A GPU worker whose job ended** asks with its GPU, and ``dispatch_enter.lua`` may
  take the head of the queue for it (``DispatchState.take_for_gpu``). Proven: the
  script takes job J for GPU g if and only if no pass holds the lock, no delayed job
  is due, the head of the queue asks for one GPU, and the first placement of the
  pass's plan on the same snapshot is J on g alone. Outside those conditions it
  takes nothing and leaves the choice to a pass (a multi-GPU head, or a later job
  backfilled past a reservation, is placed by a pass even where it would go on g).
- **A job submitted while none waits** is leased by ``SubmitLease``, on a fresh read
  or on what its client saw within the last second. Proven: the GPUs it leases are
  the first placement of the pass's plan with that job alone in the queue, on the
  live state at the instant of the lease (the cached view is checked by the lease
  script, and planned again on what the script found).

Snapshots mix priorities and submission order, one- and multi-GPU jobs, node
constraints, timeouts (so that big jobs reserve nodes and later ones backfill),
nodes of 1 to 8 GPUs leased, free, blocked by another program, silent or missing,
unhealthy nodes (an open breaker), delayed jobs due or not, and a pass holding the
lock or not. The registry's held GPUs, which the scripts do not read, are taken to
be among the leased ones, as they are except after Redis was wiped, until the
running jobs' next heartbeats take their leases again.

A failure names the seed: ``UGRO_EQUIVALENCE_SEED=<seed>`` runs the same snapshots.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field

import redis

from ugro.live.dispatch_state import FreedGpu, PendingEntry, TakenForGpu
from ugro.live.keys import Keys
from ugro.live.state import LiveState, QueuedEntry
from ugro.runtime import Runtime
from ugro.scheduling.placement import PendingJob, Placement
from ugro.scheduling.planning import plan_on, view_of
from ugro.scheduling.submit_lease import SubmitLease
from ugro.settings import Settings

SEED = int(os.environ.get("UGRO_EQUIVALENCE_SEED") or random.randrange(2**32))
# Node names whose order differs between bytes and a locale's collation.
NODES = ["a", "B", "b", "gpu-1", "gpu_1", "gpu1", "n10", "n9"]
MAX_AGE = 30.0  # s a worker's entry stays live
WINDOW = 64  # jobs a pass reads at most: the whole of any queue built here


@dataclass
class Gpu:
    node: str
    index: int
    state: str  # free, leased, blocked, silent (its worker not seen lately), missing


@dataclass
class Cluster:
    """What a snapshot holds, written the same way under any key prefix."""

    gpus: list[Gpu]
    holders: dict[tuple[str, int], str] = field(default_factory=dict)  # -> "job|token"
    running: dict[str, tuple[float | None, float]] = field(default_factory=dict)
    in_registry: dict[str, dict[int, str]] = field(default_factory=dict)
    unhealthy: dict[str, str] = field(default_factory=dict)
    queue: list[QueuedEntry] = field(default_factory=list)  # in submission order
    locked: bool = False  # another caller's pass holds the lock


def random_cluster(rng: random.Random, queued: bool = True) -> Cluster:
    nodes = rng.sample(NODES, rng.randint(1, 4))
    states = ["free", "leased", "blocked", "silent", "missing"]
    gpus = [
        Gpu(node, index, rng.choices(states, [30, 55, 5, 5, 5])[0])
        for node in nodes
        for index in range(rng.choice([1, 2, 4, 8]))
    ]
    cluster = Cluster(gpus)
    leased = [gpu for gpu in gpus if gpu.state == "leased"]
    while leased:  # running jobs of one to three GPUs of a node
        size = rng.randint(1, 3)
        job = f"run-{len(cluster.running)}"
        mine = [gpu for gpu in leased if gpu.node == leased[0].node][:size]
        for gpu in mine:
            leased.remove(gpu)
            cluster.holders[(gpu.node, gpu.index)] = f"{job}|t"
            if rng.random() < 0.3:  # the registry knows it too
                cluster.in_registry.setdefault(gpu.node, {})[gpu.index] = job
        timeout = None if rng.random() < 0.4 else rng.uniform(10, 1000)
        cluster.running[job] = (timeout, rng.uniform(0, 600))  # (timeout, started ago)
    for node in nodes:
        if rng.random() < 0.12:
            cluster.unhealthy[node] = rng.choice(["breaker open", "health CRITICAL"])
    for number in range(rng.randint(0, 8) if queued else 0):
        node = rng.choices([None, rng.choice(nodes), "elsewhere"], [70, 25, 5])[0]
        cluster.queue.append(
            QueuedEntry(
                f"job-{number}",
                rng.choice([-5, 0, 0, 0, 3, 10]),
                rng.choice([1, 1, 1, 1, 1, 1, 2, 2, 3, 4, 8]),
                node,
                None if rng.random() < 0.5 else rng.uniform(5, 2000),
            )
        )
    for number in range(rng.randint(0, 2) if rng.random() < 0.3 else 0):
        due = rng.random() < 0.5 and queued
        ready_at = time.time() + (-5 if due else 3600)
        cluster.queue.append(QueuedEntry(f"retry-{number}", 0, 1, ready_at=ready_at))
    cluster.locked = queued and rng.random() < 0.12
    return cluster


def write(pipe: redis.client.Pipeline, keys: Keys, cluster: Cluster) -> None:
    """The cluster's workers, leases, running jobs and health as commands of ``pipe``
    (the queue goes through ``LiveState.enqueue_many``)."""
    now = time.time()
    for gpu in cluster.gpus:
        if gpu.state == "missing":
            continue
        seen = now - (120.0 if gpu.state == "silent" else 0.5)
        blocked = "in use by another program" if gpu.state == "blocked" else None
        info = {"pid": 1, "host": "h", "seen": seen, "blocked": blocked, "gpu": None}
        pipe.hset(keys.workers, f"{gpu.node}:{gpu.index}", json.dumps(info))
    for (node, index), holder in cluster.holders.items():
        pipe.set(keys.lease(node, index), holder, px=600_000)
    for job, (timeout, ago) in cluster.running.items():
        fields = {"status": "running", "timeout": timeout or "", "started": now - ago}
        pipe.hset(keys.job(job), mapping=fields)
    for node, why in cluster.unhealthy.items():
        pipe.hset(keys.unhealthy_nodes, node, why)
    if cluster.locked:
        pipe.set(keys.dispatch_lock, "another-pass", px=600_000)


def pass_plan(live: LiveState, cluster: Cluster) -> tuple[list[PendingEntry], list[Placement]]:
    """What a pass reads of the queue and what it places, as ``_dispatch_pass`` does."""
    snapshot = live.dispatch.snapshot(MAX_AGE, WINDOW)
    view = view_of(snapshot.workers, snapshot.holders, cluster.in_registry)
    plans = plan_on(view, snapshot.pending, lambda jobs: live.ends.time_left(jobs, time.time()))
    return snapshot.pending, plans


def drop(client: redis.Redis, pattern: str) -> None:
    doomed = list(client.scan_iter(pattern, count=10_000))
    for start in range(0, len(doomed), 1000):
        client.unlink(*doomed[start : start + 1000])


def asking_gpu(rng: random.Random, cluster: Cluster) -> Gpu:
    """The GPU of the worker that asks: mostly one its ended job left free (live, not
    blocked, on a healthy node), else any."""
    gpu = rng.choice(cluster.gpus)
    if rng.random() < 0.7:
        gpu.state = "free"
        cluster.holders.pop((gpu.node, gpu.index), None)
        cluster.in_registry.get(gpu.node, {}).pop(gpu.index, None)
        cluster.unhealthy.pop(gpu.node, None)
    return gpu


def test_a_gpu_worker_takes_a_job_only_where_the_pure_function_places_it(
    settings: Settings, live_redis: redis.Redis
) -> None:
    rng = random.Random(SEED)
    cases, batch = 600, 50
    taken = expected_takes = 0
    wrong: list[str] = []
    for first in range(0, cases, batch):
        clusters = [random_cluster(rng) for _ in range(batch)]
        askers = [asking_gpu(rng, cluster) for cluster in clusters]
        # Each snapshot twice, under two prefixes: one for the script to take from,
        # one for the pass to read (a read drops silent workers, promotes due jobs).
        pairs = []
        pipe = live_redis.pipeline(transaction=False)
        for number, cluster in enumerate(clusters, start=first):
            prefix = f"{settings.redis_prefix}:eqv{number}"
            pair = (
                LiveState(live_redis, Keys(f"{prefix}:take")),
                LiveState(live_redis, Keys(f"{prefix}:pass")),
            )
            for live in pair:
                write(pipe, live.keys, cluster)
            pairs.append(pair)
        pipe.execute()
        for cluster, asking, (take_live, pass_live) in zip(clusters, askers, pairs, strict=True):
            for live in (take_live, pass_live):
                live.enqueue_many(cluster.queue)
            pending, plans = pass_plan(pass_live, cluster)
            due = any(e.ready_at is not None and e.ready_at < time.time() for e in cluster.queue)
            head = pending[0] if pending else None
            # The exact condition under which the script must take, and what
            plain = not cluster.locked and not due and head is not None and head.gpus == 1
            here = [Placement(head.job_id, asking.node, (asking.index,))] if head else []
            expected = head.job_id if head and plain and plans[:1] == here else None
            freed = FreedGpu(asking.node, asking.index, "tok", lease_ttl=30)
            result = take_live.dispatch.take_for_gpu("w", MAX_AGE, 8, freed)
            got = result.job_id if isinstance(result, TakenForGpu) else None
            taken += got is not None
            expected_takes += expected is not None
            if got != expected and len(wrong) < 5:
                wrong.append(
                    f"GPU {asking.node}:{asking.index} took {got}, a pass places"
                    f" {plans[:1]} (head {head}, locked {cluster.locked}, due {due})"
                    f" on {cluster}"
                )
            elif got is not None:
                holder = take_live.leases.lease_holders(asking.node, [asking.index])
                assert holder == {asking.index: f"{got}|tok"}
        drop(live_redis, f"{settings.redis_prefix}:eqv*")
    assert not wrong, f"UGRO_EQUIVALENCE_SEED={SEED}:\n" + "\n".join(wrong)
    # The plain cases are taken: a script that never takes fails here.
    assert taken == expected_takes >= cases // 20, (SEED, taken, expected_takes)


def test_a_job_submitted_while_none_waits_is_leased_where_a_pass_would_place_it(
    settings: Settings, live_redis: redis.Redis
) -> None:
    rng = random.Random(SEED)
    rt = Runtime.open(settings)
    cases, leased = 200, 0
    wrong: list[str] = []
    try:
        keys = rt.keys
        reader = LiveState(live_redis, keys)  # a pass's reads, apart from the client's
        for number in range(cases):
            drop(live_redis, f"{keys.prefix}:*")
            rt.live.dispatch.last_seen = None
            cluster = random_cluster(rng, queued=False)
            pipe = live_redis.pipeline(transaction=False)
            write(pipe, keys, cluster)
            pipe.execute()
            reader.enqueue_many(cluster.queue)  # (only delayed jobs, none due)
            leaser = SubmitLease(rt)
            # A fresh read, then, once GPUs were taken and freed, what it saw
            for route in ("fresh", "cached"):
                job = random_job(rng, f"sub-{number}-{route}", cluster)
                entry = PendingEntry(job.job_id, job.gpus, job.node, job.timeout)
                snapshot = reader.dispatch.snapshot(rt.settings.worker_ttl, 0)
                view = view_of(snapshot.workers, snapshot.holders, {})
                plans = plan_on(view, [entry], lambda jobs: {})
                expected = plans[0] if plans else None
                planned = leaser.planned(job) if route == "cached" else None
                if planned is not None and leaser.take(job, planned, "tok") == "leased":
                    got: Placement | None = planned
                else:
                    lease = leaser.lease(job)
                    got = lease[0] if lease is not None else None
                leased += got is not None
                # (on what it saw, a client may find nothing free and queue the job:
                # the pass its queueing asks for places it)
                deferred = route == "cached" and got is None
                if got != expected and not deferred and len(wrong) < 5:
                    wrong.append(f"{route}: leased {got}, a pass places {expected} on {cluster}")
                if route == "fresh":
                    shuffle_leases(rng, live_redis, keys, cluster)
    finally:
        rt.close()
    assert not wrong, f"UGRO_EQUIVALENCE_SEED={SEED}:\n" + "\n".join(wrong)
    assert leased >= cases // 4, (SEED, leased)


def random_job(rng: random.Random, job_id: str, cluster: Cluster) -> PendingJob:
    node = rng.choices([None, rng.choice(cluster.gpus).node], [75, 25])[0]
    timeout = None if rng.random() < 0.5 else rng.uniform(5, 2000)
    return PendingJob(job_id, rng.choice([1, 1, 1, 2, 4]), node, timeout)


def shuffle_leases(rng: random.Random, client: redis.Redis, keys: Keys, cluster: Cluster) -> None:
    """Jobs end and start meanwhile: a few GPUs' leases let go, a few taken."""
    pipe = client.pipeline(transaction=False)
    for gpu in rng.sample(cluster.gpus, min(len(cluster.gpus), 3)):
        if rng.random() < 0.5:
            pipe.delete(keys.lease(gpu.node, gpu.index))
        else:
            pipe.set(keys.lease(gpu.node, gpu.index), "other|t", px=600_000)
    pipe.execute()
