"""Retry policy: whether a failed attempt runs again, and after how long. Pure."""

from __future__ import annotations

from collections.abc import Iterable

from ugro.jobs.lifecycle import ExitReason

#: Ways of ending that are retried when the job has retries left. An OOM is not:
#: the same OOM again wastes GPU hours, so a job opts in with ``retry_on=["oom"]``.
RETRIED_BY_DEFAULT = frozenset(
    {ExitReason.ERROR, ExitReason.KILLED, ExitReason.TIMEOUT, ExitReason.LOST, ExitReason.STUCK}
)
#: Every reason a job may list in ``retry_on``. A full disk is not retried by
#: default either: the next attempt would meet the same full disk, unless the lab
#: frees space on its own (a cleanup job), which a job opts in for with
#: ``retry_on=["disk_full"]``.
#: An idle one neither: it would most likely idle again.
RETRYABLE = RETRIED_BY_DEFAULT | {ExitReason.OOM, ExitReason.DISK_FULL, ExitReason.IDLE}


def should_retry(
    reason: ExitReason, attempt: int, max_retries: int, retry_on: Iterable[str], deterministic: bool
) -> bool:
    """Whether failed attempt ``attempt`` (1-based), which ended for ``reason``, is
    retried.

    ``deterministic`` failures (the command could not even start) would fail the
    same way again, so they are never retried.
    """
    if deterministic or attempt > max_retries:
        return False
    return reason in RETRIED_BY_DEFAULT or reason in set(retry_on)


def backoff(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait before attempt ``attempt + 1``: doubling from ``base``, capped."""
    return float(min(cap, base * 2 ** max(0, attempt - 1)))
