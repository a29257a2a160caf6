"""Removing ended jobs for good: their registry rows, their records in Redis and
their folders (`ugro rm`, `ugro gc`, and the retention beat runs).

What may go is decided by ``ugro.registry.cleanup``: only ended jobs, an array
only whole, nothing a waiting job still depends on. The registry's rows go first
(the source of truth: a job without a row is gone, whatever is left of it), then
the job's keys in Redis, then its folder and, for an array, ``arrays/<id>.json``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from ugro.registry.cleanup import Removable, check_removable, delete_ended, ended_before
from ugro.registry.models import utcnow
from ugro.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cleanup:
    """What a removal removed (or, dry, would remove): jobs not in an array, whole
    arrays with their tasks, and what it refused with the reason."""

    jobs: list[str] = field(default_factory=list)
    arrays: dict[str, list[str]] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False

    @property
    def count(self) -> int:
        """Jobs removed, the tasks of arrays included."""
        return len(self.jobs) + sum(len(tasks) for tasks in self.arrays.values())


def remove(rt: Runtime, ids: Sequence[str], keep_tree: bool = False) -> Cleanup:
    """Remove these ended jobs and arrays (whole ids). Nothing is removed when one
    of them may not be: the result then lists what was refused and why."""
    found = check_removable(rt.registry, ids)
    if found.refused:
        return Cleanup(refused=found.refused)
    return _remove(rt, found, keep_tree)


def collect(
    rt: Runtime,
    older_than: float,
    statuses: Iterable[str] | None = None,
    keep_tree: bool = False,
    dry_run: bool = False,
) -> Cleanup:
    """Remove the jobs (and whole arrays) that ended more than ``older_than``
    seconds ago, in one of ``statuses`` (default: any ended one)."""
    cutoff = utcnow() - timedelta(seconds=older_than)
    found = ended_before(rt.registry, cutoff, statuses)
    if dry_run:
        return Cleanup(found.jobs, found.arrays, dry_run=True)
    return _remove(rt, found, keep_tree)


def apply_retention(rt: Runtime) -> Cleanup | None:
    """Beat's daily retention: jobs that ended more than ``job_retention_days`` ago
    go; None when no retention is set."""
    days = rt.settings.job_retention_days
    if days is None:
        return None
    done = collect(rt, days * 86400.0)
    if done.count:
        log.info("retention: removed %d jobs ended over %g days ago", done.count, days)
    return done


def _remove(rt: Runtime, found: Removable, keep_tree: bool) -> Cleanup:
    attempts = {row.id: row.attempt for row in rt.registry.list_jobs(ids=found.job_ids)}
    deleted = set(delete_ended(rt.registry, found))
    if deleted:
        _forget_live(rt, {job: attempts.get(job, 0) for job in deleted})
    # (an array whose every task went; one retried meanwhile keeps its row and record)
    arrays = {array: tasks for array, tasks in found.arrays.items() if deleted.issuperset(tasks)}
    if not keep_tree:
        for job_id in deleted:
            shutil.rmtree(rt.paths(job_id).root, ignore_errors=True)
        for array_id in arrays:
            (rt.settings.arrays_dir / f"{array_id}.json").unlink(missing_ok=True)
    return Cleanup([job for job in found.jobs if job in deleted], arrays)


def _forget_live(rt: Runtime, attempts: dict[str, int]) -> None:
    """Delete every key Redis keeps of these ended jobs (most would expire anyway)."""
    keys = rt.live.keys
    pipe = rt.live.redis.pipeline(transaction=False)
    for job_id, attempt in attempts.items():
        pipe.zrem(keys.pending, job_id)
        pipe.zrem(keys.delayed, job_id)
        names = [
            keys.job(job_id),
            keys.job_secrets(job_id),
            keys.heartbeat(job_id),
            keys.cancel(job_id),
            keys.fence(job_id),
            keys.suspect(job_id),
        ]
        names += [keys.gang_stop(job_id, number) for number in range(1, attempt + 1)]
        pipe.delete(*names)
    pipe.execute()
