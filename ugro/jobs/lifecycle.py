"""The job lifecycle: statuses, the ways an attempt ends, and the moves between them.

``queued -> placed -> running -> finished | failed | cancelled | lost``. A job the
worker of its GPU takes at once goes ``queued -> running`` (placed and claimed in
one commit). An interrupted job (its worker shut down), a preempted one, a failed or lost one with
retries left, and one retried by hand go back to ``queued``; a placement that was
never claimed goes back too. ``stuck`` and ``outdated`` are findings of the
progress scan, not stored statuses.

``TRANSITIONS`` lists every move the code makes and nothing else. Every write of a
job's status goes through ``transition_sources``, which the registry calls in
front of its compare-and-set: a move the table does not list raises
``TransitionError`` before anything is written, whoever asked for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from ugro.errors import TransitionError


class JobStatus(StrEnum):
    QUEUED = "queued"
    PLACED = "placed"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"
    LOST = "lost"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


class ExitReason(StrEnum):
    """How an attempt ended: the ``exit_reason`` of the registry and metadata.json."""

    OK = "ok"
    #: a non-zero exit code, or the command could not start
    ERROR = "error"
    #: a signal ugro did not send
    KILLED = "killed"
    #: CUDA or host out-of-memory in the log tail, or the kernel's OOM killer
    OOM = "oom"
    #: no room left to write: the log tail says so (ENOSPC, a quota), or the job
    #: failed while the filesystem of its folder was full. Named apart from
    #: ``error`` because the fix is the lab's (free space), not the job's.
    DISK_FULL = "disk_full"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    #: stopped by the progress scan: no log or metric changed for too long
    STUCK = "stuck"
    #: its GPU lease was lost (the worker fenced itself, or the reconciler found it)
    LOST = "lost"
    #: its worker shut down; the job goes back to the queue
    INTERRUPTED = "interrupted"
    #: a gang member stopped because another member ended first (a member's
    #: reason only: the attempt ends with that first member's)
    STOPPED = "stopped"
    #: cancelled without running: a job it waited on can never let it start (it
    #: failed, was cancelled, or a job before it in the chain was)
    DEPENDENCY = "dependency"
    #: stopped for holding its GPUs idle (``--on-idle stop``: under
    #: ``UGRO_IDLE_GPU_PERCENT`` for ``UGRO_IDLE_GPU_AFTER``)
    IDLE = "idle"
    #: stopped for a short job that waited (``--preemptible``, under
    #: ``[sharing.preemption]``); the job goes back to the queue
    PREEMPTED = "preempted"


#: Statuses a job has when no retry or person moves it again. ``lost`` is not one:
#: the retry policy settles it (queued again, or failed).
TERMINAL = frozenset({JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELLED})

#: Every status change the code makes, by the status it starts from.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset(
        {
            JobStatus.PLACED,  # a dispatch pass placed it
            JobStatus.RUNNING,  # placed and claimed at once by its GPU's worker
            JobStatus.CANCELLED,
        }
    ),
    JobStatus.PLACED: frozenset(
        {
            JobStatus.RUNNING,  # its worker's claim
            JobStatus.QUEUED,  # the placement was never claimed (reconcile)
            JobStatus.CANCELLED,
        }
    ),
    JobStatus.RUNNING: frozenset(
        {
            JobStatus.FINISHED,
            JobStatus.FAILED,
            JobStatus.CANCELLED,
            JobStatus.LOST,  # its lease ran out (reconcile)
            JobStatus.QUEUED,  # interrupted, or failed with retries left
        }
    ),
    JobStatus.LOST: frozenset(
        {
            JobStatus.QUEUED,  # retries left, or retried by hand
            JobStatus.FAILED,  # no retries left
            JobStatus.CANCELLED,
        }
    ),
    JobStatus.FAILED: frozenset({JobStatus.QUEUED}),  # retried by hand
    JobStatus.CANCELLED: frozenset({JobStatus.QUEUED}),  # retried by hand
    JobStatus.FINISHED: frozenset(),
}


def allowed(old: JobStatus, new: JobStatus) -> bool:
    """Whether the lifecycle table allows ``old -> new``."""
    return new in TRANSITIONS[old]


def sources_of(new: JobStatus) -> frozenset[JobStatus]:
    """Every status from which ``new`` may be reached."""
    return frozenset(old for old, targets in TRANSITIONS.items() if new in targets)


def transition_sources(
    new: JobStatus, expect: Iterable[JobStatus] | None = None
) -> tuple[JobStatus, ...]:
    """The statuses a compare-and-set write of ``new`` may move a job from.

    Args:
        new: the status to write.
        expect: the statuses the caller moves the job from (the write changes
            nothing when the job is in another by then); None for every status
            the table lets reach ``new``.

    Returns:
        ``expect`` in the table's order (so a statement's shape does not depend on
        the order the caller listed them in).

    Raises:
        TransitionError: ``expect`` is empty, or names a status from which the
            table does not allow ``new``.
    """
    sources = sources_of(new) if expect is None else frozenset(map(JobStatus, expect))
    forbidden = sorted(old for old in sources if not allowed(old, new))
    if forbidden:
        moves = ", ".join(f"{old} -> {new}" for old in forbidden)
        raise TransitionError(f"the job lifecycle does not allow {moves}")
    if not sources:
        raise TransitionError(f"a move to {new} must start from some status")
    return tuple(status for status in TRANSITIONS if status in sources)
