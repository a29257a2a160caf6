"""The lease of a job placed as it is submitted, planned on what its client saw a
moment ago.

A job that fits now, with nothing waiting before it, is placed as it is accepted
(``ugro.scheduling.submit``), where a pass would place it were it queued: the plan
is ``plan_on``, the pass's own, with the job alone in the queue. Reading the live
GPUs and the registry's held GPUs afresh for each submit costs a round trip to
Redis and a query. A client here plans on what it read within the last second,
and takes the lease with one script that checks, at that instant, what the plan
relied on:

- no job waits in the queue, nor a delayed one is due: queue order holds, and the
  job alone is the queue a pass would see;
- the live state is the one planned on (its epoch): after Redis was wiped, the
  registry's held GPUs are read again; and the workers hash has as many fields;
- every GPU seen is leased or free as it was seen: none taken since from under
  the plan, and none freed since that a pass would have chosen instead.

The registry's held GPUs matter only where Redis shows a GPU free, and a second-old
reading of them is as good as a fresh one there: a job placed since has its lease
in Redis, with a TTL far longer than a second, unless Redis was wiped, which the
epoch tells. A plan that finds no GPU free is safe however old: the job is queued,
and queueing itself looks at the leases (``LiveState.enqueue_many``).

A client that found jobs waiting queues what it submits in the next second without
asking again (a sweep submitted back to back): queueing is always safe, and a job
that could have gone at once is placed by the pass its queueing asks for.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from secrets import token_hex

from ugro.live.dispatch_state import PendingEntry, SeenGpus
from ugro.live.leases import FirstOutcome, PlannedOn
from ugro.live.worker_info import WorkerInfo
from ugro.runtime import Runtime
from ugro.scheduling.placement import PendingJob, Placement
from ugro.scheduling.planning import plan_on, view_of

# How long (s) a client plans on what it read of the GPUs and the registry.
_FRESH = 1.0


@dataclass
class _RegistryHeld:
    at: float  # time.monotonic() of the read
    epoch: str  # the live state's epoch it was read under
    held: dict[str, dict[int, str]]  # Registry.held_gpus


class SubmitLease:
    """One client's leases at submit, and what it last read to plan them."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._held: _RegistryHeld | None = None
        # Until when (monotonic) submits are queued without asking: jobs were waiting.
        self._queue_until = 0.0

    def planned(self, job: PendingJob) -> Placement | None:
        """Where ``job`` goes on what this client saw within the last second, when
        that view and the registry's held GPUs read under it are trusted and no job
        was found waiting; None otherwise (``lease`` decides then)."""
        view = self._view()
        if view is None:
            return None
        seen, in_registry = view
        if in_registry is None:
            return None
        return _plan(job, seen.workers, seen.holders, in_registry)

    def _view(self) -> tuple[SeenGpus, dict[str, dict[int, str]] | None] | None:
        """What this client saw of the GPUs within the last second, with the
        registry's held GPUs read under it when those can be trusted (None: to be
        read afresh); None when it saw nothing that recent, or found jobs waiting."""
        seen, now = self.rt.live.dispatch.last_seen, time.monotonic()
        if now < self._queue_until or seen is None or now - seen.at > _FRESH:
            return None
        held = self._held
        trusted = held is not None and now - held.at <= _FRESH and held.epoch == seen.epoch
        return seen, held.held if held is not None and trusted else None

    def take(
        self, job: PendingJob, placement: Placement, token: str, then: list[list[str]] | None = None
    ) -> FirstOutcome:
        """The script's lease of ``placement``, planned on the view this client saw,
        with ``then`` (commands) run when it is taken; what it found otherwise is
        kept for the next plan."""
        seen = self.rt.live.dispatch.last_seen
        if seen is None:
            return "stale"
        outcome, holders = self.rt.live.leases.acquire_first(
            placement.node,
            list(placement.gpus),
            f"{job.job_id}|{token}",
            self.rt.settings.placement_ttl,
            PlannedOn(seen.epoch, seen.in_hash, dict(seen.holders)),
            then,
        )
        if outcome == "waiting":
            self._queue_until = time.monotonic() + _FRESH
        elif outcome == "stale":
            self._held = None  # read afresh next time
        elif outcome == "taken" and holders is not None:
            seen.holders = holders  # what the next plan, and the next submit, start from
        # (a lease taken is not written into what was seen: the job it is for often
        # ends before the next submit, which then finds the GPUs as they were seen)
        return outcome

    def lease(self, job: PendingJob) -> tuple[Placement, str] | None:
        """Lease GPUs for ``job`` when one fits now and no job waits; returns the
        placement and its lease token, or None when the job must be queued."""
        if time.monotonic() < self._queue_until:
            return None
        view = self._view()
        if view is None:
            return self._lease_afresh(job)
        seen, in_registry = view
        # Twice at most: on what was seen, then on what the script found (a GPU
        # taken or freed since).
        for _ in range(2):
            placement = _plan(job, seen.workers, seen.holders, in_registry or {})
            if placement is None:
                return None  # nothing free: queueing looks at the leases again
            if in_registry is None:
                return self._lease_afresh(job)
            token = token_hex(8)
            outcome = self.take(job, placement, token)
            if outcome == "leased":
                return placement, token
            if outcome == "waiting":
                return None
            if outcome == "stale":
                return self._lease_afresh(job)
        return None

    def _lease_afresh(self, job: PendingJob) -> tuple[Placement, str] | None:
        """The lease on a fresh snapshot and a fresh read of the registry."""
        rt = self.rt
        # Pending jobs come back only when a GPU is free; with none free no plan is made.
        workers, holders, entries = rt.live.dispatch.snapshot(rt.settings.worker_ttl, limit=1)
        seen = rt.live.dispatch.last_seen
        if entries:
            self._queue_until = time.monotonic() + _FRESH
            return None
        if seen is None or all(holder is not None for holder in holders.values()):
            return None  # the registry can only hold more GPUs, never free one: not asked
        in_registry = rt.registry.held_gpus()
        self._held = _RegistryHeld(seen.at, seen.epoch, in_registry)
        placement = _plan(job, workers, holders, in_registry)
        if placement is None:
            return None
        token = token_hex(8)
        if self.take(job, placement, token) != "leased":
            return None  # changed since it was read: the queue it is
        return placement, token


def _plan(
    job: PendingJob,
    workers: list[WorkerInfo],
    holders: dict[tuple[str, int], str | None],
    in_registry: dict[str, dict[int, str]],
) -> Placement | None:
    """Where a pass would place ``job`` were it queued: it is alone in the queue
    (the lease is taken only while no job waits). Alone, a job that must wait for
    GPUs places nothing whatever the running jobs' ends: none are read."""
    view = view_of(workers, holders, in_registry)
    entry = PendingEntry(job.job_id, job.gpus, job.node, job.timeout)
    plans = plan_on(view, [entry], lambda jobs: {})
    return plans[0] if plans else None
