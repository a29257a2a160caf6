"""A job's dependencies on others, as data: the kinds, and what the statuses of
the jobs it waits on make of it (wait, go, or never).

- ``after`` X: start once X finished OK; never once X failed or was cancelled.
- ``after_any`` X: start once X ended, whatever the outcome.
- ``after_failed`` X: start only if X failed (a clean-up or an alert); never once
  X finished OK or was cancelled.

A job starts when every one of its dependencies is met. ``lost`` is no end: the
retry policy settles it, and the dependent waits on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from ugro.jobs.lifecycle import TERMINAL, JobStatus

DependencyKind = Literal["after", "after_any", "after_failed"]
KINDS: tuple[DependencyKind, ...] = ("after", "after_any", "after_failed")

#: How a job's own hold reads: waiting on its dependencies, or for a slot of its
#: array (``max_running``). A held job is queued in the registry and not in the
#: live queue: dispatch never looks at it.
HOLD_AFTER = "after"
HOLD_SLOT = "slot"


@dataclass(frozen=True)
class Dependency:
    """One job a job waits on, as it is now."""

    on: str  # the job waited on
    kind: DependencyKind
    status: str  # its status now


@dataclass(frozen=True)
class Verdict:
    """What the dependencies make of a job: ``go`` when all are met, ``never`` when
    one can no longer be (``cause`` names it), else ``wait``."""

    state: Literal["wait", "go", "never"]
    cause: Dependency | None = None

    @property
    def why(self) -> str:
        """A console line's reason for ``never``: which job broke the chain."""
        if self.cause is None:
            return ""
        wanted = {"after": "finished", "after_failed": "failed"}.get(self.cause.kind, "ended")
        return f"its dependency {self.cause.on} {self.cause.status} (it waited for {wanted})"


def _met(dependency: Dependency) -> bool | None:
    """True: met; False: can never be; None: not yet."""
    status = JobStatus(dependency.status)
    if status not in TERMINAL:
        return None
    if dependency.kind == "after":
        return status is JobStatus.FINISHED
    if dependency.kind == "after_failed":
        return status is JobStatus.FAILED
    return True


def verdict(dependencies: Iterable[Dependency]) -> Verdict:
    """What ``dependencies`` (a job's, all of them) make of it now."""
    waiting = False
    for dependency in dependencies:
        met = _met(dependency)
        if met is False:
            return Verdict("never", dependency)
        waiting = waiting or met is None
    return Verdict("wait" if waiting else "go")


def waiting_for(dependencies: Iterable[Dependency], most: int = 3) -> str:
    """``ugro status``'s reason of a job still held by its dependencies:
    ``waiting for lr-3e-4-7f3a (running), eval-1 (queued)``."""
    pending = [d for d in dependencies if _met(d) is None]
    shown = ", ".join(f"{d.on} ({d.status})" for d in pending[:most])
    more = f" and {len(pending) - most} more" if len(pending) > most else ""
    return f"waiting for {shown}{more}" if pending else "its dependencies are met"
