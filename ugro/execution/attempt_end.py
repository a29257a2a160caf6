"""An attempt's end recorded: its row in the attempts, the job's next status by
the retry policy, its leases let go; and how the end reads in the job's console
and metadata. Shared by one-node jobs and gangs (``ugro.execution.gang_end``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ugro.errors import RegistryUnreachable
from ugro.execution.outcome import requeue, settle_failure
from ugro.execution.runner import ExitInfo
from ugro.jobs.lifecycle import JobStatus
from ugro.jobs.paths import JobPaths
from ugro.jobs.spec import JobSpec
from ugro.live.writes import Writes
from ugro.progress.jobs import final_progress
from ugro.registry.models import JobRow
from ugro.runtime import Runtime
from ugro.scheduling.workflow import job_ended


def ended_fields(info: ExitInfo | None, pid: int | None = None) -> dict[str, Any]:
    """What a run's metadata says of its end (``info``; None: it runs, as ``pid``)."""
    if info is None:
        none = ("end", "duration_s", "exit_code", "exit_signal", "exit_reason", "error")
        return dict.fromkeys(none) | {"pid": pid}
    return {
        "end": datetime.fromtimestamp(info.ended, UTC).isoformat(),
        "duration_s": round(info.duration, 3),
        "exit_code": info.code,
        "exit_signal": info.signal,
        "exit_reason": info.reason.value,
        "error": info.error,
        "pid": info.pid,
    }


def end_line(job: JobRow, info: ExitInfo) -> str:
    """The console's line of an attempt's end."""
    line = f"attempt {job.attempt} ended: {info.reason}"
    return f"{line} - {info.error}" if info.error else line


def record_end(
    rt: Runtime,
    job: JobRow,
    spec: JobSpec | None,
    paths: JobPaths,
    node: str,
    info: ExitInfo,
    lease: tuple[str, list[int], str] | None,
    writes: Writes | None,
) -> None:
    """Record the attempt's end and the job's next status; release its leases
    (``lease``: node, GPUs, holder; the job's processes are gone by now; None: a
    gang job's, each member let its own go). Those Redis writes of an attempt
    that ended well or was cancelled are left in ``writes`` for the caller to
    execute."""
    ended = datetime.fromtimestamp(info.ended, UTC)
    attempt: dict[str, Any] = {
        "ended_at": ended,
        "exit_code": info.code,
        "exit_signal": info.signal,
        "exit_reason": info.reason,
    }
    running = [JobStatus.RUNNING]
    outcome: dict[str, Any] = {
        "exit_code": info.code,
        "exit_signal": info.signal,
        "exit_reason": info.reason,
        "error": info.error,
        "progress": final_progress(rt, job, ok=info.reason == "ok", spec=spec),
    }
    ending = {"ok": JobStatus.FINISHED, "cancelled": JobStatus.CANCELLED}.get(info.reason)
    if ending is not None:
        # The attempt's end and the job's status in one commit. "stuck" is
        # retried below; "cancelled" is by a person.
        waiting = rt.end_attempt(
            job.id,
            job.attempt,
            attempt,
            ending,
            expect=running,
            release=lease,
            writes=writes,
            finished_at=ended,
            **outcome,
        )
        if ending is JobStatus.CANCELLED:
            rt.registry.add_event("job_cancelled", f"{job.id} cancelled", job.id, node)
        if waiting is not None:
            # (before the dispatch pass that follows: a job it held may start in it)
            job_ended(rt, job.id, job.array_id, waiting)
        return
    # The retry policy counts the attempts that ended: record this one first. The
    # lease goes last: a running job without its lease is a lost one to the
    # reconciler (the worker's own dispatch pass, next, sees the GPUs free).
    rt.registry.end_attempt(job, **attempt)
    release = lease is not None
    try:
        if info.reason == "interrupted":
            # The worker is shutting down: the job goes back to the queue, not lost.
            requeue(rt, job, running, "its worker shut down", **outcome)
        elif info.reason == "preempted":
            # Stopped for a waiting job: back in the queue, behind it, ahead of the rest.
            preempting = rt.live.preemption.preempting()
            why = f"preempted for {preempting}" if preempting else "preempted"
            if requeue(rt, job, running, why, **outcome):
                rt.live.preemption.requeued(job.id)
        else:
            settle_failure(
                rt,
                job,
                running,
                info.reason,
                info.error,
                ended,
                info.code,
                info.signal,
                info.deterministic,
                outcome["progress"],
            )
    except RegistryUnreachable:
        release = False  # kept while the end waits for the registry (see _run_one)
        raise
    finally:
        if release and lease is not None:
            rt.live.leases.release(*lease)
