"""Preemption: a short job kept waiting on a full cluster stops running jobs that
agreed to it (``--preemptible``), and they go back to the queue to resume from
their checkpoints.

Without it, a job of minutes that needs whole nodes waits for the running jobs
there to end, hours on a busy cluster: no order of the queue and no backfill can
start it sooner. With ``[sharing.preemption]`` in the cluster file, a job whose
declared timeout is at most ``max_timeout_minutes`` and which has waited
``after_minutes`` at the front of the queue without a place may stop jobs to take
their GPUs, on these terms (``victims_for``):

- a victim is a ``--preemptible`` job that has run at least ``min_run_minutes``
  (so a resumed job makes progress before it can be stopped again) and was not
  stopped ``max_per_job`` times already, of an account that has used more GPU
  time per share than the waiting job's (a user who used little preempts one
  who used much, never the reverse);
- the nodes chosen are those where the fewest GPUs must stop; at a tie, those
  whose victims ran least (the least work lost, should a job not checkpoint);
- one preemption is under way at a time.

A victim is stopped as a cancel is (SIGTERM, then SIGKILL after ``stop_grace``):
its attempt ends ``preempted``, which counts against no retry, and the job goes
back to the queue ahead of everything but the job that stopped it, which heads
the queue until it starts (``front_of_queue``). The GPUs that the victims let go
are then the soonest free of the cluster, so the reservation of the job at the
head falls on them and nothing is backfilled there first.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from ugro.registry.models import as_utc
from ugro.runtime import Runtime
from ugro.scheduling.placement import PendingJob
from ugro.scheduling.sharing import PreemptionPolicy


@dataclass(frozen=True)
class Preemptible:
    """A running ``--preemptible`` job as preemption sees it."""

    job_id: str
    account: str  # whose usage fair share counts it in
    ran: float  # s its attempt has run
    stopped: int = 0  # times it was preempted before


@dataclass(frozen=True)
class NodeGpus:
    """One node's GPUs: the free ones and which job holds each of the others."""

    free: int
    capacity: int
    held: Mapping[int, str]  # GPU index -> the job holding it


def victims_for(
    job: PendingJob,
    account: str,
    nodes: Mapping[str, NodeGpus],
    running: Mapping[str, Preemptible],
    usage: Mapping[str, float],
    shares: Mapping[str, float],
    policy: PreemptionPolicy,
) -> list[str] | None:
    """The jobs to stop so that ``job`` (of ``account``) can start, or None when
    no choice of victims frees enough (see the module for the terms)."""
    own = usage.get(account, 0.0) / shares.get(account, 1.0)
    min_run = policy.min_run_minutes * 60

    def may_stop(victim: Preemptible) -> bool:
        if victim.account == account or victim.ran < min_run:
            return False
        if victim.stopped >= policy.max_per_job:
            return False
        return usage.get(victim.account, 0.0) / shares.get(victim.account, 1.0) > own

    options: list[tuple[int, float, str, list[str]]] = []
    for name, node in nodes.items():
        if node.capacity < job.gpus or (job.node is not None and name != job.node):
            continue
        needed = job.gpus - node.free
        if needed <= 0:
            options.append((0, 0.0, name, []))
            continue
        stoppable: dict[str, int] = {}
        for holder in node.held.values():
            victim = running.get(holder)
            if victim is not None and may_stop(victim):
                stoppable[holder] = stoppable.get(holder, 0) + 1
        chosen = _fewest_gpus(needed, stoppable, running)
        if chosen is not None:
            gpus = sum(stoppable[v] for v in chosen)
            options.append((gpus, sum(running[v].ran for v in chosen), name, chosen))
    if len(options) < job.nodes:
        return None
    options.sort()
    victims: list[str] = []
    for _, _, _, chosen in options[: job.nodes]:
        victims += [v for v in chosen if v not in victims]
    return victims or None


def _fewest_gpus(
    needed: int, stoppable: Mapping[str, int], running: Mapping[str, Preemptible]
) -> list[str] | None:
    """Jobs of ``stoppable`` (job -> its GPUs on the node) holding ``needed`` GPUs
    together: the largest first, so that few stop; the least run first among equals.
    None when they all hold fewer."""
    if sum(stoppable.values()) < needed:
        return None
    chosen: list[str] = []
    order = sorted(stoppable, key=lambda v: (-stoppable[v], running[v].ran, v))
    # A job that alone holds what is left to free, the smallest such, ends the choice.
    while needed > 0:
        enough = [v for v in order if stoppable[v] >= needed and v not in chosen]
        if enough:
            chosen.append(min(enough, key=lambda v: (stoppable[v], running[v].ran, v)))
            return chosen
        largest = next(v for v in order if v not in chosen)
        chosen.append(largest)
        needed -= stoppable[largest]
    return chosen


def preempt_waiting(rt: Runtime) -> list[str]:
    """Beat's look for a job that may preempt (``[sharing.preemption]``): the first
    of the queue's window that may, and finds victims, has them stopped. Returns
    the jobs asked to stop."""
    from ugro.jobs.lifecycle import JobStatus
    from ugro.jobs.spec import JobSpec
    from ugro.live.clock import server_time
    from ugro.registry.usage import owners_of, preempted_counts, submitted_at
    from ugro.scheduling.dispatch import WINDOW
    from ugro.scheduling.fair_share import usage_now
    from ugro.scheduling.planning import gpu_view
    from ugro.scheduling.sharing import quota_view, sharing_policy

    sharing = sharing_policy(rt.settings)
    policy = sharing.preemption
    live = rt.live
    if policy is None:
        return []
    now = server_time(live.redis)
    if live.preemption.under_way(now) is not None:
        return []
    head = live.pending(WINDOW)
    submitted = submitted_at(rt.registry, [entry.job_id for entry in head])
    waiting = [
        entry
        for entry in head
        if entry.job_id in submitted
        and policy.may_preempt(entry.timeout, now - submitted[entry.job_id])
    ]
    if waiting and sharing.caps_gpus:
        # (a job over its quota would not start on the GPUs it freed)
        quotas = quota_view(rt.registry, sharing, [entry.job_id for entry in waiting])
        waiting = [
            entry
            for entry in waiting
            if all(
                quotas.headroom.get(account, entry.gpus * entry.nodes) >= entry.gpus * entry.nodes
                for account in quotas.accounts.get(entry.job_id, ())
            )
        ]
    if not waiting:
        return []
    rows = {}
    owner: dict[str, str] = {}
    for row in rt.registry.list_jobs(statuses=[JobStatus.RUNNING]):
        owner[row.id] = sharing.account_of(row.user, row.group_name)
        if row.started_at is not None and JobSpec.model_validate_json(row.spec).preemptible:
            rows[row.id] = row
    if not rows:
        return []
    stopped = preempted_counts(rt.registry, list(rows))
    running = {
        job_id: Preemptible(
            job_id,
            owner[job_id],
            now - cast(datetime, as_utc(row.started_at)).timestamp(),
            stopped.get(job_id, 0),
        )
        for job_id, row in rows.items()
    }
    view = gpu_view(rt)
    nodes = {
        name: NodeGpus(len(view.free.get(name, [])), capacity, view.held.get(name, {}))
        for name, capacity in view.capacity.items()
    }
    usage = usage_now(rt, sharing)
    owners = owners_of(rt.registry, [entry.job_id for entry in waiting])
    accounts = {
        entry.job_id: sharing.account_of(*owners.get(entry.job_id, (None, None)))
        for entry in waiting
    }
    shares = {a: sharing.share_of(a) for a in {*accounts.values(), *owner.values()}}
    for entry in waiting:
        account = accounts[entry.job_id]
        job = PendingJob(entry.job_id, entry.gpus, entry.node, entry.timeout, entry.nodes)
        victims = victims_for(job, account, nodes, running, usage, shares, policy)
        if victims is None:
            continue
        grace = rt.settings.stop_grace
        # Settled once its victims' grace is over and a pass has had time to run.
        settle = grace + rt.settings.dispatch_interval
        if not live.preemption.begin(job.job_id, victims, now, settle):
            return []
        for victim in victims:
            live.stops.request_cancel(victim, grace, "preempted")
            live.ends.stop_by(victim, time.time() + grace)
            rt.registry.add_event(
                "preempted",
                f"{victim} preempted for {job.job_id} ({account or 'no user'})",
                victim,
            )
        return victims
    return []
