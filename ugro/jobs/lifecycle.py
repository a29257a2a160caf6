"""The job lifecycle: statuses and the transitions between them.

``queued -> placed -> running -> finished | failed | cancelled | lost``. A job that
was interrupted (its worker shut down cleanly) or lost goes back to ``queued``
under its retry policy. ``stuck`` and ``outdated`` are findings of the progress
scan, not stored statuses.
"""

from __future__ import annotations

from enum import StrEnum


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


TERMINAL = frozenset({JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELLED})

#: Every allowed status change. ``lost`` is terminal unless requeued by retry policy.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.PLACED, JobStatus.CANCELLED, JobStatus.FAILED}),
    JobStatus.PLACED: frozenset(
        {JobStatus.RUNNING, JobStatus.QUEUED, JobStatus.CANCELLED, JobStatus.LOST}
    ),
    JobStatus.RUNNING: frozenset(
        {
            JobStatus.FINISHED,
            JobStatus.FAILED,
            JobStatus.CANCELLED,
            JobStatus.LOST,
            JobStatus.QUEUED,
        }
    ),
    JobStatus.LOST: frozenset({JobStatus.QUEUED, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.FAILED: frozenset({JobStatus.QUEUED}),
    JobStatus.CANCELLED: frozenset({JobStatus.QUEUED}),
    JobStatus.FINISHED: frozenset(),
}


def allowed(old: JobStatus, new: JobStatus) -> bool:
    """Whether the lifecycle table allows ``old -> new``."""
    return new in TRANSITIONS[old]


def sources_of(new: JobStatus) -> frozenset[JobStatus]:
    """Every status from which ``new`` may be reached."""
    return frozenset(old for old, targets in TRANSITIONS.items() if new in targets)
