"""Every Redis key ugro writes, built in one place.

All keys start with the installation's prefix (``Settings.redis_prefix``, default
``ugro``). Each builder says who writes the key and how long it lives.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "ugro"

    # Pending jobs, a sorted set scored by (priority, submission order); written by
    # submit and requeue, emptied by dispatch. No TTL: it is the live queue.
    @property
    def pending(self) -> str:
        return f"{self.prefix}:pending"

    # Jobs waiting out a retry backoff: sorted set scored by the unix time at which
    # they may run; dispatch moves due ones to pending. No TTL.
    @property
    def delayed(self) -> str:
        return f"{self.prefix}:delayed"

    # Monotonic submission counter that orders jobs of equal priority. No TTL.
    @property
    def sequence(self) -> str:
        return f"{self.prefix}:seq"

    # Live state of one job (hash: status, node, gpus, attempt, ...). Written by
    # every status change; deleted 1 day after the job ends (the registry keeps it).
    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    # Secret env values of one job, never written to disk by ugro. Deleted when the
    # job reaches a terminal status.
    def job_secrets(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:secrets"

    # Heartbeat of a running job's attempt; TTL lease_ttl, renewed by the worker.
    def heartbeat(self, job_id: str) -> str:
        return f"{self.prefix}:heartbeat:{job_id}"

    # The lease of one GPU: value "<job_id>|<token>", TTL placement_ttl until the
    # worker claims it, then lease_ttl renewed by the heartbeat.
    def lease(self, node: str, index: int) -> str:
        return f"{self.prefix}:lease:{node}:{index}"

    # A stop request for a running job: JSON {grace, reason}, reason "cancelled"
    # (`ugro cancel`) or "stuck" (the progress scan). Read by the job's worker;
    # deleted when the attempt ends (1 day TTL).
    def cancel(self, job_id: str) -> str:
        return f"{self.prefix}:cancel:{job_id}"

    # The preemption under way: JSON {job, victims, at, until}, the job that stopped
    # others to start (``ugro.live.preemption``). Written by beat's preemption
    # check; TTL 1 day (it counts only while its job is pending).
    @property
    def preempting(self) -> str:
        return f"{self.prefix}:preempting"

    # Jobs stopped for another, queued again to resume (set). Added to by their
    # workers; a member no longer pending is dropped when read. TTL 1 day.
    @property
    def preempted(self) -> str:
        return f"{self.prefix}:preempted"

    # A gang job's attempt being stopped: JSON {rank, node, reason, error} of the
    # member whose end stops the others (the first to set it). TTL 1 day.
    def gang_stop(self, job_id: str, attempt: int) -> str:
        return f"{self.prefix}:gangstop:{job_id}:{attempt}"

    # The highest attempt of a job declared lost: a worker of that attempt that
    # comes back must not re-take its lease (it fences itself). TTL 7 days.
    def fence(self, job_id: str) -> str:
        return f"{self.prefix}:fence:{job_id}"

    # When the reconciler first saw a placed or running job without its lease
    # (unix time). Lost only if still so after lease_ttl. TTL 1 hour.
    def suspect(self, job_id: str) -> str:
        return f"{self.prefix}:suspect:{job_id}"

    # Since when reconcile passes have watched Redis without a gap: hash {last,
    # since}, Redis's own clock (``Leases.watched_for``). Gone with a wipe.
    @property
    def reconciled(self) -> str:
        return f"{self.prefix}:reconcile:watched"

    # Single-flight reconcile (TTL 60 s).
    @property
    def reconcile_lock(self) -> str:
        return f"{self.prefix}:reconcile:lock"

    # Live GPU workers: hash "<node>:<index>" -> JSON {pid, host, seen, blocked,
    # gpu (the device's last reading)}. Each
    # worker refreshes its field every worker_ttl / 3 and deletes it on shutdown;
    # dispatch ignores (and removes) a field older than worker_ttl. One hash, not a
    # key per worker, so a dispatch pass reads them all in one call.
    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    # A random id, set by the first dispatch snapshot of this Redis server's life
    # (SET NX): a different id, or none, says the live state was wiped since one
    # was read. No TTL.
    @property
    def epoch(self) -> str:
        return f"{self.prefix}:epoch"

    # Single-flight dispatch: a lock (TTL 30 s, a crashed holder cannot block
    # dispatch for longer) and a flag that asks the holder for one more pass.
    @property
    def dispatch_lock(self) -> str:
        return f"{self.prefix}:dispatch:lock"

    @property
    def dispatch_dirty(self) -> str:
        return f"{self.prefix}:dispatch:dirty"

    # A GPU worker that finds the lock taken as its job ends waits to be handed it
    # (its GPU is then placed in its own pass): its entry in this list, and the
    # list of one item pushed to wake it.
    @property
    def dispatch_waiting(self) -> str:
        return f"{self.prefix}:dispatch:waiting"

    def dispatch_wake(self, token: str) -> str:
        return f"{self.prefix}:dispatch:wake:{token}"

    # Node health ------------------------------------------------------------------

    # A node agent's latest reading of its node (JSON NodeReading), refreshed every
    # health_collect_interval; TTL 10 intervals, the sweep judges freshness itself.
    def node_reading(self, node: str) -> str:
        return f"{self.prefix}:health:reading:{node}"

    # Nodes known to the health sweep: hash node -> unix time of its agent's last
    # reading. The sweep drops a node silent for a day.
    @property
    def health_nodes(self) -> str:
        return f"{self.prefix}:health:nodes"

    # The sweep's latest finding per node: hash node -> JSON NodeSample. No TTL;
    # rewritten by every sweep, a dropped node's field is deleted with it.
    @property
    def node_health(self) -> str:
        return f"{self.prefix}:health:latest"

    # Nodes dispatch must not use: hash node -> why (breaker open or half-open,
    # or health CRITICAL). Written by the sweep only.
    @property
    def unhealthy_nodes(self) -> str:
        return f"{self.prefix}:health:unhealthy"

    # One node's circuit breaker: hash {state, failures, opened_at}. Changed only
    # by lua/breaker_record.lua. No TTL.
    def breaker(self, node: str) -> str:
        return f"{self.prefix}:breaker:{node}"

    # Sweep pacing: a gate key (SET NX, PX = the current interval) so one sweep
    # runs per interval however many beats tick, and the interval itself (adapts
    # between health_min_interval and health_max_interval).
    @property
    def health_gate(self) -> str:
        return f"{self.prefix}:health:gate"

    @property
    def health_interval(self) -> str:
        return f"{self.prefix}:health:interval"

    # Set (TTL 1 hour) when a sweep pruned old health samples: one prune an hour.
    @property
    def health_prune(self) -> str:
        return f"{self.prefix}:health:prune"

    # The time (epoch seconds) up to which health samples were thinned to one a minute.
    @property
    def health_thinned(self) -> str:
        return f"{self.prefix}:health:thinned"

    # Celery -------------------------------------------------------------------------

    # The prefix of every key Celery's transport writes itself (its
    # ``global_keyprefix``): the GPU workers' queues, its unacked hash, its bindings.
    @property
    def celery_prefix(self) -> str:
        return f"{self.prefix}:"

    # One of Celery's keys, a queue's list say: written by Celery, and by ugro where
    # it pushes a job message itself (ugro/live/job_message.py). No TTL.
    def celery(self, name: str) -> str:
        return f"{self.celery_prefix}{name}"

    # Beat ---------------------------------------------------------------------------

    # The prefix of RedBeat's keys, which it writes itself (ugro/transport/beat_scheduler.py),
    # adding a colon of its own: <prefix>:redbeat::lock, the lock of the one beat
    # that schedules (TTL beat_lock_timeout, renewed every tick);
    # <prefix>:redbeat::schedule and ::statics, the schedule; <prefix>:redbeat:<entry>,
    # each entry's definition and last run. No TTL but the lock's.
    @property
    def redbeat(self) -> str:
        return f"{self.prefix}:redbeat:"

    # Pub/sub channel announcing status changes ("<job_id> <status>").
    @property
    def events_channel(self) -> str:
        return f"{self.prefix}:events"
