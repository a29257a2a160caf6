"""What happens to a job after an attempt: finished, retried, requeued, failed.

Shared by the worker (an attempt ended) and the reconciler (an attempt was lost).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from ugro.jobs.lifecycle import ExitReason, JobStatus
from ugro.jobs.retry import backoff, should_retry
from ugro.jobs.spec import JobSpec
from ugro.live.clock import server_time
from ugro.registry.models import JobRow, utcnow
from ugro.runtime import Runtime
from ugro.scheduling.workflow import job_ended
from ugro.transport.queues import control_queue

# Ends that put a job back in the queue, counting against no retry.
_NOT_FAILED = (ExitReason.INTERRUPTED, ExitReason.PREEMPTED)


def requeue(
    rt: Runtime,
    job: JobRow,
    expect: Iterable[JobStatus],
    why: str,
    delay: float = 0.0,
    **values: Any,
) -> bool:
    """Put a job back in the queue (after ``delay`` seconds); False if its status
    changed under us.

    Raises:
        TransitionError: the lifecycle table does not let ``expect`` go back to
            ``queued``.
    """
    spec = JobSpec.model_validate_json(job.spec)
    # (of the attempt it ended: a worker that comes back late moves on no later one)
    moved = rt.transition(
        job.id,
        JobStatus.QUEUED,
        expect=expect,
        of_attempt=job.attempt,
        node=None,
        gpu_indices=None,
        members=None,
        **values,
    )
    if not moved:
        return False
    # Due by Redis's clock: dispatch, on whichever host, reads it by that one.
    ready_at = server_time(rt.live.redis) + delay if delay > 0 else None
    rt.live.enqueue(job.id, job.priority, job.gpus, spec.node, spec.timeout, ready_at, spec.nodes)
    if delay > 0:
        # Wake dispatch when the backoff is over (beat's tick is the safety net).
        rt.app.send_task("ugro.dispatch", countdown=delay, queue=control_queue(rt.settings))
    when = f" in {delay:.0f} s" if delay > 0 else ""
    # (the event below says it too: a full tree must not undo the requeue)
    with contextlib.suppress(OSError):
        rt.paths(job.id).append_console(f"requeued{when}: {why}")
    rt.registry.add_event("requeued", f"{job.id} requeued{when}: {why}", job.id, job.node)
    return True


def failed_attempts(rt: Runtime, job_id: str) -> int:
    """Attempts that count against ``max_retries`` (an interrupted or preempted one
    does not)."""
    return sum(
        1
        for a in rt.registry.attempts(job_id)
        if a.exit_reason is not None and a.exit_reason not in _NOT_FAILED
    )


def settle_failure(
    rt: Runtime,
    job: JobRow,
    expect: Iterable[JobStatus],
    reason: ExitReason,
    error: str | None,
    ended: datetime | None = None,
    code: int | None = None,
    sig: int | None = None,
    deterministic: bool = False,
    progress: str | None = None,
) -> JobStatus:
    """A failed attempt: queue the job again under its retry policy, or fail it.

    Returns the job's new status.
    """
    spec = JobSpec.model_validate_json(job.spec)
    failures = failed_attempts(rt, job.id)
    fields: dict[str, Any] = {
        "exit_code": code,
        "exit_signal": sig,
        "exit_reason": reason,
        "error": error,
        "progress": progress,
    }
    if should_retry(reason, failures, spec.max_retries, spec.retry_on, deterministic):
        delay = backoff(failures, rt.settings.retry_backoff, rt.settings.retry_backoff_max)
        why = f"attempt {job.attempt} ended: {reason}; retry {failures} of {spec.max_retries}"
        if requeue(rt, job, expect, why, delay, **fields):
            return JobStatus.QUEUED
    failed = rt.transition(
        job.id,
        JobStatus.FAILED,
        expect=expect,
        of_attempt=job.attempt,
        finished_at=ended or utcnow(),
        **fields,
    )
    rt.registry.add_event(
        "job_failed", f"{job.id} failed: {reason} {error or ''}".strip(), job.id, job.node
    )
    if failed:
        job_ended(rt, job.id, job.array_id)
    return JobStatus.FAILED
