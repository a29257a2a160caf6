"""Reconcile: make live state agree with the registry, the source of truth.

Runs at worker and beat start, on beat's tick and on demand (`ugro reconcile`):

- a queued job missing from Redis (after a wipe) is queued again;
- a running job whose lease is gone is declared lost: fenced (its worker may not
  come back to it), and requeued or failed by its retry policy. A running gang
  job's members are looked at one by one: a member lost so stops the others
  (``ugro.execution.gang_end.declare_member_lost``);
- a placed job whose lease is gone, and still gone ``lease_ttl`` later (a submit
  writes its row a moment before it takes its lease), was never claimed: it goes
  back to the queue.

A running job's missing lease ran out: its worker did not renew it for
``lease_ttl`` (a worker lets its lease go only after its job's end is recorded).
Unless Redis was wiped, restarted or out of reach meanwhile: then a live worker
takes its lease again at its next heartbeat. So for a lease TTL after reconcile
passes resume from a gap (none had run, or none for 1.5 reconcile intervals) a
lease must stay missing a lease TTL more (the suspect window) before its job is
lost.
A dead worker's job is lost at most lease_ttl + reconcile_interval after its last
heartbeat, and 2 x lease_ttl + reconcile_interval just after such a gap.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import UTC, datetime

from ugro.execution.gang_end import declare_member_lost
from ugro.execution.outcome import requeue, settle_failure
from ugro.jobs.lifecycle import ExitReason, JobStatus
from ugro.jobs.spec import JobSpec
from ugro.live.clock import server_time
from ugro.registry.members import members_of
from ugro.registry.models import JobRow, gpu_list
from ugro.runtime import Runtime
from ugro.scheduling.dispatch import dispatch_pending
from ugro.scheduling.workflow import look_again
from ugro.transport.queues import node_queue

log = logging.getLogger(__name__)


def reconcile(rt: Runtime) -> dict[str, int]:
    """One reconcile pass (skipped when another runs); returns what it changed."""
    lock = rt.live.redis.lock(rt.keys.reconcile_lock, timeout=60, blocking=False)
    if not lock.acquire():
        return {}
    try:
        report = _reconcile(rt)
    finally:
        lock.release()
    if report:
        log.info("reconcile: %s", dict(report))
        dispatch_pending(rt)
    return dict(report)


def _reconcile(rt: Runtime) -> Counter[str]:
    report: Counter[str] = Counter()
    # Redis's clock: a suspect's first sighting may be another host's pass, and
    # hosts' clocks may be minutes apart.
    now = server_time(rt.live.redis)
    window = _suspect_window(rt)
    in_queue = rt.live.queued_ids()
    active = [JobStatus.QUEUED, JobStatus.PLACED, JobStatus.RUNNING, JobStatus.LOST]
    rows = sorted(rt.registry.list_jobs(statuses=active), key=lambda r: r.created_at)
    for row in rows:
        status = JobStatus(row.status)
        if status is JobStatus.QUEUED:
            if row.hold is None and row.id not in in_queue:  # (a held job is not queued live)
                spec = JobSpec.model_validate_json(row.spec)
                rt.live.enqueue(
                    row.id, row.priority, row.gpus, spec.node, spec.timeout, nodes=spec.nodes
                )
                report["queued again"] += 1
        elif status is JobStatus.LOST:
            # Declared lost by a pass that stopped before settling it.
            settle_failure(rt, row, [JobStatus.LOST], ExitReason.LOST, row.error)
            report["lost"] += 1
        elif status is JobStatus.RUNNING and row.members:
            report["lost"] += _reconcile_gang(rt, row, now, window)
        elif row.node and rt.live.leases.holds_lease(row.id, row.node, gpu_list(row)):
            rt.live.leases.clear_suspect(row.id)
        elif now - rt.live.leases.suspect_since(row.id, now) >= (
            window if status is JobStatus.RUNNING else rt.settings.lease_ttl
        ):
            rt.live.leases.clear_suspect(row.id)
            if status is JobStatus.PLACED:
                if requeue(rt, row, [JobStatus.PLACED], "its placement was never claimed"):
                    report["placement expired"] += 1
            elif declare_lost(rt, row):
                report["lost"] += 1
    # Held jobs whose dependencies ended unseen, array slots not handed on.
    if changed := look_again(rt):
        report["held jobs settled"] += changed
    return report


def _suspect_window(rt: Runtime) -> float:
    """How long a lease must stay missing before its job is lost: at once once
    reconcile passes have watched Redis for a lease TTL without a gap (a missing
    lease ran out: its worker did not renew it for that long), a lease TTL
    otherwise (after a wipe, a restart or an outage a live worker takes its lease
    again at its next heartbeat, and must get the time to)."""
    settings = rt.settings
    ttl = settings.lease_ttl
    # A gap between passes longer than this may have let a live worker's lease run
    # out (an outage of Redis, say): it must stay shorter than a lease outlives
    # its last renewal, and longer than the passes' own spacing.
    gap = 1.5 * settings.reconcile_interval
    watched = rt.live.leases.watched_for(gap)
    if gap > ttl - settings.heartbeat_interval:
        return ttl  # passes too far apart to tell an outage from their spacing
    return 0.0 if watched >= ttl else ttl


def _reconcile_gang(rt: Runtime, row: JobRow, now: float, window: float) -> int:
    """A running gang job: each member whose lease is gone, and still gone
    ``window`` later, is declared lost, which stops the others; returns how many
    were."""
    spec = JobSpec.model_validate_json(row.spec)
    lost = 0
    for member in members_of(rt.registry, row.id, row.attempt):
        if member.ended_at is not None:
            continue
        suspect = f"{row.id}.{member.rank}"
        if rt.live.leases.holds_lease(row.id, member.node, json.loads(member.gpu_indices)):
            rt.live.leases.clear_suspect(suspect)
        elif now - rt.live.leases.suspect_since(suspect, now) >= window:
            rt.live.leases.clear_suspect(suspect)
            declare_member_lost(rt, row, spec, member)
            lost += 1
    return lost


def declare_lost(rt: Runtime, row: JobRow, error: str | None = None) -> bool:
    """A running job whose worker stopped renewing its lease (or died, ``error``
    says how): fence the attempt, record it lost, then retry or fail it."""
    rt.live.leases.fence(row.id, row.attempt)
    if error is None:
        error = f"no heartbeat from node {row.node} for more than {rt.settings.lease_ttl:g} s"
    reason = ExitReason.LOST
    if not rt.transition(
        row.id,
        JobStatus.LOST,
        expect=[JobStatus.RUNNING],
        of_attempt=row.attempt,
        exit_reason=reason,
        error=error,
    ):
        return False
    ended = datetime.now(UTC)
    rt.registry.end_attempt(row, ended_at=ended, exit_reason=reason)
    paths = rt.paths(row.id)
    lost: dict[str, object] = {"end": ended.isoformat(), "exit_reason": reason, "error": error}
    if paths.read_metadata().get("attempt") != row.attempt:
        # Its worker died before writing the attempt's start: the file still speaks
        # of the attempt before, so it gets what the job's row knows of this one.
        gpus = gpu_list(row)
        lost |= {
            "name": row.name,
            "host": "",  # (its start, which knew it, was never recorded)
            "command": JobSpec.model_validate_json(row.spec).argv(),
            "distributed": False,
            "attempt": row.attempt,
            "node": row.node,
            "nodes": [row.node],
            "gpus": gpus,
            "cuda_visible_devices": ",".join(map(str, gpus)),
            "start": row.started_at.isoformat() if row.started_at else None,
            "pid": None,
            "duration_s": None,
            "exit_code": None,
            "exit_signal": None,
        }
    paths.update_metadata(**lost)
    paths.append_console(f"attempt {row.attempt} lost: {error}")
    rt.registry.add_event("job_lost", f"{row.id} lost: {error}", row.id, row.node)
    if row.node:
        # Its processes may still run there: the node's agent stops them now rather
        # than at its next scan.
        rt.app.send_task("ugro.kill_orphans", queue=node_queue(rt.settings, row.node))
    settle_failure(rt, rt.registry.get_job(row.id), [JobStatus.LOST], reason, error)
    return True
