"""Removing ended jobs from the registry: what `ugro rm`, `ugro gc` and the job
retention delete, and the guard that keeps every other job out of it.

Only a job that has ended (finished, failed or cancelled) is ever deleted, and the
check is the delete's own ``WHERE``: a job retried between the look and the delete
stays. An array goes as one: its row with its tasks, and only once every task has
ended. A job or array that a job not ended yet waits on (``--after``) stays too,
so that its dependents can still read how it ended.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

from sqlalchemy import Table, delete, func, select

from ugro.jobs.lifecycle import TERMINAL
from ugro.registry.models import ArrayRow, DependencyRow, EventRow, JobRow, as_utc
from ugro.registry.store import Registry

_JOBS = cast(Table, JobRow.__table__)
_ARRAYS = cast(Table, ArrayRow.__table__)
_DEPENDENCIES = cast(Table, DependencyRow.__table__)
ENDED = tuple(sorted(status.value for status in TERMINAL))
# Ids per statement: SQLite before 3.32 takes at most 999 parameters.
_IDS_PER_STATEMENT = 500


@dataclass(frozen=True)
class Removable:
    """What may be removed: jobs that are no task of an array, arrays as a whole
    (each with its tasks' ids), and what was refused with the reason."""

    jobs: list[str] = field(default_factory=list)
    arrays: dict[str, list[str]] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)

    @property
    def job_ids(self) -> list[str]:
        """Every job row to delete: the jobs and the arrays' tasks."""
        return [*self.jobs, *(task for tasks in self.arrays.values() for task in tasks)]


def waited_on(registry: Registry) -> set[str]:
    """The jobs and arrays that a job not ended yet waits on."""
    query = (
        select(_DEPENDENCIES.c.on_job)
        .join(_JOBS, _JOBS.c.id == _DEPENDENCIES.c.job_id)
        .where(_JOBS.c.status.not_in(ENDED))
    )
    with registry.connections.begin() as conn:
        return set(conn.execute(query).scalars())


def check_removable(registry: Registry, ids: Sequence[str]) -> Removable:
    """Of these job and array ids (whole ids, as the registry has them), those that
    may be removed now, and why each other one may not."""
    found = Removable()
    kept = waited_on(registry)
    with registry.connections.begin() as conn:
        arrays = set(conn.execute(select(_ARRAYS.c.id).where(_ARRAYS.c.id.in_(ids))).scalars())
        jobs = {
            row.id: row
            for row in conn.execute(
                select(_JOBS.c.id, _JOBS.c.status, _JOBS.c.array_id).where(_JOBS.c.id.in_(ids))
            )
        }
        tasks: dict[str, list[tuple[str, str]]] = {array: [] for array in arrays}
        if arrays:
            query = select(_JOBS.c.array_id, _JOBS.c.id, _JOBS.c.status).where(
                _JOBS.c.array_id.in_(arrays)
            )
            for array_id, task_id, status in conn.execute(query):
                tasks[array_id].append((task_id, status))
    for given in ids:
        if given in kept:
            found.refused[given] = "a job not ended yet waits on it"
        elif given in arrays:
            active = [task for task, status in tasks[given] if status not in ENDED]
            if active:
                found.refused[given] = f"its task {active[0]} has not ended"
            else:
                found.arrays[given] = [task for task, _ in tasks[given]]
        elif given in jobs:
            row = jobs[given]
            if row.array_id is not None:
                found.refused[given] = f"it is a task of array {row.array_id}: remove the array"
            elif row.status not in ENDED:
                found.refused[given] = f"it is {row.status}: cancel it first"
            else:
                found.jobs.append(given)
        else:
            found.refused[given] = "no such job or array"
    return found


def ended_before(
    registry: Registry, cutoff: datetime, statuses: Iterable[str] | None = None
) -> Removable:
    """The jobs and arrays that ended before ``cutoff`` (in one of ``statuses``, by
    default any ended one): an array when its last task ended before it and every
    task is in one of those statuses. Those waited on are left out."""
    wanted = [status for status in ENDED if statuses is None or status in set(statuses)]
    kept = waited_on(registry)
    found = Removable()
    single = (
        select(_JOBS.c.id)
        .where(
            _JOBS.c.array_id.is_(None),
            _JOBS.c.status.in_(wanted),
            _JOBS.c.finished_at < cutoff,
        )
        .order_by(_JOBS.c.finished_at)
    )
    # An array's tasks, each group once: how many, how many in the wanted statuses,
    # and the last end among them.
    grouped = (
        select(
            _JOBS.c.array_id,
            func.count(),
            func.count().filter(_JOBS.c.status.in_(wanted)),
            func.max(_JOBS.c.finished_at),
        )
        .where(_JOBS.c.array_id.is_not(None))
        .group_by(_JOBS.c.array_id)
    )
    with registry.connections.begin() as conn:
        found.jobs.extend(job for job in conn.execute(single).scalars() if job not in kept)
        arrays = [
            array_id
            for array_id, count, matching, last in conn.execute(grouped)
            if count == matching
            and last is not None
            and cast(datetime, as_utc(last)) < cutoff
            and array_id not in kept
        ]
        for array_id in arrays:
            query = select(_JOBS.c.id).where(_JOBS.c.array_id == array_id)
            found.arrays[array_id] = list(conn.execute(query).scalars())
    return found


def delete_ended(registry: Registry, removable: Removable) -> list[str]:
    """Delete these jobs' rows (with their attempts, gang members, dependencies and
    events), then the rows of these arrays whose tasks are all gone, in one
    transaction; a job that is not ended by then is left as it is. Returns the
    jobs deleted."""
    ids = removable.job_ids
    deleted: list[str] = []
    with registry.connections.begin() as conn:
        for start in range(0, len(ids), _IDS_PER_STATEMENT):
            chunk = ids[start : start + _IDS_PER_STATEMENT]
            # The check that each has ended is the delete's own: a job retried since
            # the look stays. (Its attempts, gang members and dependencies go with it
            # through the foreign keys' cascade.)
            ended = list(
                conn.execute(
                    delete(JobRow)
                    .where(JobRow.id.in_(chunk), JobRow.status.in_(ENDED))
                    .returning(JobRow.id)
                ).scalars()
            )
            if not ended:
                continue
            conn.execute(delete(EventRow).where(EventRow.job_id.in_(ended)))
            deleted.extend(ended)
        arrays = list(removable.arrays)
        if arrays:
            left = select(_JOBS.c.array_id).where(_JOBS.c.array_id.in_(arrays))
            gone = [a for a in arrays if a not in set(conn.execute(left).scalars())]
            if gone:
                conn.execute(delete(ArrayRow).where(ArrayRow.id.in_(gone)))
    return deleted
