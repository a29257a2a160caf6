"""Fair share: among queued jobs of one priority, the order that gives each user
GPU time in proportion to their share, counting what they used recently.

A user's usage is the GPU-seconds of their attempts, each weighted by how long
ago it ran: halved every ``fair_share_half_life`` (7 days by default), so last
month's sweep weighs little. The queue's order within a priority is then that of
weighted fair queueing: the next job is the first queued one of the user with the
least (usage + GPU-seconds already ordered before it) / share, each user's own
jobs in their submission order. A user who used little starts first, and two
users' sweeps interleave as their usage grows; a job's estimated cost is its GPUs
by its timeout (an hour when it has none).

Beat's dispatch tick ranks the queue again (``rank_queue``): the live queue's
scores are rewritten within each priority, reusing the sequence numbers there
are, so dispatch, its head window and a worker taking the head of the queue
read the fair order as they read any order, at no cost on their path. A job
queued since the last tick waits at the end of its priority until the next one.
"""

from __future__ import annotations

import heapq
import math
import weakref
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, cast

from ugro.registry.usage import Used
from ugro.runtime import Runtime
from ugro.scheduling.sharing import SharingPolicy, sharing_policy

#: The estimated run of a job without a timeout, for its place in the order (s).
UNTIMED_COST = 3600.0
HOUR = 3600.0
#: ``length_class`` of a job without a timeout: after every declared length.
UNTIMED_CLASS = 64


@dataclass(frozen=True)
class Queued:
    """A queued job as fair share sees it."""

    job_id: str
    user: str
    cost: float  # estimated GPU-seconds


def decayed_usage(
    attempts: Iterable[Used], now: float, half_life: float, by: Literal["user", "group"] = "user"
) -> dict[str, float]:
    """Each user's (``by`` group: each group's) GPU-seconds, each second weighted by
    2^(-age / half_life)."""
    usage: dict[str, float] = defaultdict(float)
    rate = math.log(2) / half_life
    for used in attempts:
        end = now if used.ended is None else min(used.ended, now)
        if end <= used.started:
            continue
        # The integral of exp(-rate * (now - t)) over the attempt's run.
        weight = (math.exp(-rate * (now - end)) - math.exp(-rate * (now - used.started))) / rate
        usage[used.group if by == "group" else used.user] += used.gpus * weight
    return dict(usage)


def fair_order(
    queued: Sequence[Queued], usage: Mapping[str, float], shares: Mapping[str, float]
) -> list[str]:
    """``queued`` (in submission order) in fair share order (see the module)."""
    by_user: dict[str, deque[Queued]] = defaultdict(deque)
    first: dict[str, int] = {}
    for index, job in enumerate(queued):
        by_user[job.user].append(job)
        first.setdefault(job.user, index)
    # (virtual time, the position of the user's next job in submission order, user)
    heap = [(usage.get(user, 0.0) / shares.get(user, 1.0), first[user], user) for user in by_user]
    heapq.heapify(heap)
    order: list[str] = []
    position = {id(job): n for n, job in enumerate(queued)}
    while heap:
        virtual, _, user = heapq.heappop(heap)
        job = by_user[user].popleft()
        order.append(job.job_id)
        if by_user[user]:
            after = virtual + job.cost / shares.get(user, 1.0)
            heapq.heappush(heap, (after, position[id(by_user[user][0])], user))
    return order


def length_class(timeout: float | None) -> int:
    """A declared length's class for ``shortest_first``: 0 up to an hour, then one
    for each doubling (2 h, 4 h, 8 h, ...); a job without a timeout after them all.
    Classes rather than the timeouts themselves, so that fair share still orders
    the jobs of a class (users' timeouts differ by minutes), and a timeout shaved
    a little buys nothing."""
    if timeout is None:
        return UNTIMED_CLASS
    return min(UNTIMED_CLASS - 1, math.ceil(math.log2(max(timeout, HOUR) / HOUR)))


def shortest_first(
    fair: Sequence[str],
    timeouts: Mapping[str, float | None],
    waited: Mapping[str, float],
    starvation_bound: float,
) -> list[str]:
    """``fair`` (jobs in fair share order) with the shorter length classes first,
    and before them all every job that has waited over ``starvation_bound``
    seconds; within each, the fair share order stands. A short job is rewarded
    by backfill anyway; putting it first too is what shortest job first does,
    and on a real cluster's week it halves the average wait (README, Scheduling
    on a real trace). The bound keeps a long job from waiting for ever behind
    short ones: once over it, the job heads the queue, and its reservation holds."""

    def key(job_id: str) -> int:
        if waited.get(job_id, 0.0) > starvation_bound:
            return -1
        return length_class(timeouts.get(job_id))

    return sorted(fair, key=key)


def front_of_queue(
    order: Sequence[str], preempting: Sequence[str], preempted: Sequence[str]
) -> list[str]:
    """``order`` with the jobs that preempted first, then those preempted (each
    in ``order``'s order)."""
    first = {job: 0 for job in preempting} | {job: 1 for job in preempted if job not in preempting}
    return sorted(order, key=lambda job: first.get(job, 2))


def job_cost(gpus: int, nodes: int, timeout: float | None) -> float:
    return gpus * nodes * (timeout if timeout else UNTIMED_COST)


def rank_queue(rt: Runtime) -> int:
    """Rewrite the live queue's order within each priority to the fair one;
    returns how many jobs moved."""
    live = rt.live
    pending = cast(
        list[tuple[str, float]], live.redis.zrange(live.keys.pending, 0, -1, withscores=True)
    )
    if len(pending) < 2:
        return 0
    policy = sharing_policy(rt.settings)
    usage = usage_now(rt, policy)
    facts = _queued_facts(rt, [job_id for job_id, _ in pending])
    # (a preemption's jobs sit between two others' sequence numbers: floats)
    bands: dict[float, list[tuple[str, float]]] = defaultdict(list)
    for job_id, score in pending:
        band, seq = divmod(score, live.priority_weight)
        bands[band].append((job_id, seq))
    waited: dict[str, float] = {}
    if policy.shortest_first:
        from ugro.live.clock import server_time

        now = server_time(live.redis)
        waited = {job_id: now - fact.submitted for job_id, fact in facts.items()}
    front = None
    if policy.preemption is not None:
        preempting = live.preemption.preempting()
        front = ([preempting] if preempting else [], live.preemption.waiting())
    moved: dict[str, float] = {}
    for band, members in bands.items():
        queued = [
            Queued(job_id, policy.account_of(*facts[job_id].owner), job_cost(*facts[job_id].shape))
            for job_id, _ in members
            if job_id in facts
        ]
        was = dict(members)
        seqs = sorted(was[job.job_id] for job in queued)
        shares = {job.user: policy.share_of(job.user) for job in queued}
        order = fair_order(queued, usage, shares)
        if policy.shortest_first:
            timeouts = {job_id: facts[job_id].shape[2] for job_id in order}
            order = shortest_first(order, timeouts, waited, policy.starvation_hours * HOUR)
        if front is not None:
            order = front_of_queue(order, *front)
        for job_id, seq in zip(order, seqs, strict=True):
            if was[job_id] != seq:
                moved[job_id] = band * live.priority_weight + seq
    if moved:
        live.redis.zadd(live.keys.pending, moved, xx=True)
    return len(moved)


@dataclass(frozen=True)
class QueuedFacts:
    """What never changes of a queued job, as ranking reads it."""

    owner: tuple[str | None, str | None]  # (user, group)
    shape: tuple[int, int, float | None]  # GPUs a node, nodes, timeout
    submitted: float  # s since the epoch


# Each registry's queued jobs' facts as the last tick read them. Read anew, they
# are most of a tick at 50,000 queued (a registry query and a Redis read a job);
# kept, a tick reads only the jobs queued since.
_facts_read: weakref.WeakKeyDictionary[object, dict[str, QueuedFacts]] = weakref.WeakKeyDictionary()


def _queued_facts(rt: Runtime, job_ids: list[str]) -> dict[str, QueuedFacts]:
    """The facts of each of ``job_ids`` that the registry and Redis both hold (a
    job not yet in both is ranked at the next tick)."""
    from ugro.registry.usage import owners_of, submitted_at  # (beat's tick only)

    known = _facts_read.get(rt.registry, {})
    facts = {job_id: known[job_id] for job_id in job_ids if job_id in known}
    new = [job_id for job_id in job_ids if job_id not in known]
    if new:
        owners = owners_of(rt.registry, new)
        submitted = submitted_at(rt.registry, new)
        for job_id, shape in rt.live.job_shapes(new).items():
            if job_id in owners and job_id in submitted:
                facts[job_id] = QueuedFacts(owners[job_id], shape, submitted[job_id])
    _facts_read[rt.registry] = facts  # (only what is queued now: the rest is gone)
    return facts


def usage_now(rt: Runtime, policy: SharingPolicy) -> dict[str, float]:
    """Each account's decayed usage now (attempts older than six half-lives weigh
    under 2 % and are not read)."""
    from ugro.live.clock import server_time
    from ugro.registry.usage import recent_attempts

    now = server_time(rt.live.redis)
    half_life = rt.settings.fair_share_half_life
    attempts = recent_attempts(rt.registry, now - 6 * half_life)
    return decayed_usage(attempts, now, half_life, policy.by)


@dataclass(frozen=True)
class UserShare:
    """What `ugro share` shows of one user (of one group, when shares are by group)."""

    user: str
    share: float
    usage_gpu_hours: float  # decayed
    queued: int
    running_gpus: int  # on all their nodes
    rank: int  # 1: the next to be served
    by: str = "user"
    max_gpus: int | None = None
    max_queued: int | None = None


def user_shares(rt: Runtime) -> list[UserShare]:
    """Every user (or group) with recent usage or a job queued or running, in the
    order fair share serves them now (least usage per share first)."""
    from ugro.jobs.lifecycle import JobStatus
    from ugro.registry.usage import all_gpus

    policy = sharing_policy(rt.settings)
    usage = usage_now(rt, policy)
    queued: dict[str, int] = defaultdict(int)
    running: dict[str, int] = defaultdict(int)
    active = [JobStatus.QUEUED, JobStatus.PLACED, JobStatus.RUNNING]
    for row in rt.registry.list_jobs(statuses=active):
        account = policy.account_of(row.user, row.group_name)
        if row.status == JobStatus.QUEUED.value:
            queued[account] += 1
        else:
            running[account] += all_gpus(row.gpus, row.members)
    accounts = set(usage) | set(queued) | set(running)

    def served(account: str) -> tuple[float, str]:
        return usage.get(account, 0.0) / policy.share_of(account), account

    shown = []
    for rank, account in enumerate(sorted(accounts, key=served), start=1):
        limits = policy.limits(policy.by, account)
        shown.append(
            UserShare(
                account,
                policy.share_of(account),
                round(usage.get(account, 0.0) / 3600, 4),
                queued[account],
                running[account],
                rank,
                policy.by,
                limits.max_gpus if limits else None,
                limits.max_queued if limits else None,
            )
        )
    return shown
