"""Held jobs in the registry: the dependencies a job waits on, the arrays its
tasks belong to, and the ``hold`` that keeps a queued job out of the live queue
(``ugro.jobs.dependencies``).

A hold is let go by a compare-and-set on it: when a job's end and its dependent's
submission both find the dependent's dependencies met, one of them lets it go.
An array's slots are counted and handed out in one transaction that starts with
a write to the array's row, so the ends of its tasks take their turns (a row lock
in PostgreSQL, the database's write lock in SQLite): no two of them hand out the
same free slot, and ``max_running`` is never exceeded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, func, or_, select, update

from ugro.jobs.dependencies import HOLD_AFTER, HOLD_SLOT, Dependency, DependencyKind
from ugro.jobs.lifecycle import TERMINAL, JobStatus, transition_sources
from ugro.registry import statements as sql
from ugro.registry.models import ArrayRow, DependencyRow, JobRow, as_utc, job_from
from ugro.registry.store import Registry

_JOBS = cast(Table, JobRow.__table__)
_DEPENDENCIES = cast(Table, DependencyRow.__table__)
_ARRAYS = cast(Table, ArrayRow.__table__)
_QUEUED = JobStatus.QUEUED.value
_ENDED = [status.value for status in TERMINAL]
_ACTIVE = [status.value for status in JobStatus if status not in TERMINAL]


def dependencies_of(registry: Registry, job_id: str) -> list[Dependency]:
    """What ``job_id`` waits on, each with its status now: a job's, or an array's
    as one (``array_status``)."""
    query = (
        select(_DEPENDENCIES.c.on_job, _DEPENDENCIES.c.kind, _JOBS.c.status)
        .outerjoin(_JOBS, _JOBS.c.id == _DEPENDENCIES.c.on_job)
        .where(_DEPENDENCIES.c.job_id == job_id)
        .order_by(_DEPENDENCIES.c.on_job)
    )
    with registry.connections.begin() as conn:
        rows = list(conn.execute(query))
    return [
        Dependency(on, cast(DependencyKind, kind), status or array_status(registry, on))
        for on, kind, status in rows
    ]


def array_status(registry: Registry, array_id: str) -> str:
    """An array's status as one, for what waits on it: running or queued while a
    task has not ended, else finished when all finished, failed when one failed, else
    cancelled."""
    query = (
        select(_JOBS.c.status, func.count())
        .where(_JOBS.c.array_id == array_id)
        .group_by(_JOBS.c.status)
    )
    with registry.connections.begin() as conn:
        counts = {status: n for status, n in conn.execute(query)}
    if not counts or set(counts) - set(_ENDED):
        busy = {JobStatus.PLACED.value, JobStatus.RUNNING.value} & set(counts)
        return JobStatus.RUNNING.value if busy else _QUEUED
    if set(counts) == {JobStatus.FINISHED.value}:
        return JobStatus.FINISHED.value
    return JobStatus.FAILED.value if JobStatus.FAILED.value in counts else "cancelled"


def array_ended(registry: Registry, array_id: str) -> bool:
    """Whether every task of the array has ended (one indexed look)."""
    query = (
        select(_JOBS.c.id)
        .where(_JOBS.c.array_id == array_id, _JOBS.c.status.not_in(_ENDED))
        .limit(1)
    )
    with registry.connections.begin() as conn:
        return conn.execute(query).first() is None


def held_dependents(registry: Registry, job_id: str) -> list[str]:
    """The jobs still held by their dependencies that wait on ``job_id``."""
    query = sql.held_dependents(_DEPENDENCIES, _JOBS)
    with registry.connections.begin() as conn:
        return list(conn.scalars(query, {"w_on": job_id, "w_hold": HOLD_AFTER}))


def held_after(registry: Registry, limit: int = 1000) -> list[str]:
    """Jobs held by their dependencies of which one has ended (or names an array),
    oldest first: those the reconciler looks at again."""
    ended = (
        select(_DEPENDENCIES.c.job_id)
        .outerjoin(_JOBS, _JOBS.c.id == _DEPENDENCIES.c.on_job)
        .where(or_(_JOBS.c.status.in_(_ENDED), _JOBS.c.id.is_(None)))
    )
    query = (
        select(_JOBS.c.id)
        .where(_JOBS.c.hold == HOLD_AFTER, _JOBS.c.status == _QUEUED, _JOBS.c.id.in_(ended))
        .order_by(_JOBS.c.created_at)
        .limit(limit)
    )
    with registry.connections.begin() as conn:
        return list(conn.scalars(query))


def let_go(registry: Registry, job_id: str, hold: str, to: str | None) -> JobRow | None:
    """Move a queued job's hold from ``hold`` to ``to`` (None: free to be placed);
    the row as it is now, or None when another got there first."""
    stmt = (
        update(_JOBS)
        .where(_JOBS.c.id == job_id, _JOBS.c.hold == hold, _JOBS.c.status == _QUEUED)
        .values(hold=to)
        .returning(*_JOBS.c)
    )
    with registry.connections.begin() as conn:
        row = conn.execute(stmt).first()
    return None if row is None else job_from(row._mapping)


def take_slots(registry: Registry, array_id: str) -> list[JobRow]:
    """Let go of as many of the array's tasks waiting for a slot as it has free
    slots (``max_running`` less its tasks let go and not ended), lowest index
    first; the tasks let go, as they are now."""
    with registry.connections.begin() as conn:
        # The write that makes the array's task ends take their turns (see above).
        locked = conn.execute(
            update(_ARRAYS)
            .where(_ARRAYS.c.id == array_id)
            .values(max_running=_ARRAYS.c.max_running)
            .returning(_ARRAYS.c.max_running)
        ).first()
        if locked is None or locked[0] is None:
            return []
        running = conn.execute(
            select(func.count())
            .select_from(_JOBS)
            .where(
                _JOBS.c.array_id == array_id,
                _JOBS.c.hold.is_(None),
                _JOBS.c.status.in_(_ACTIVE),  # (not "not ended": the index serves this)
            )
        ).scalar_one()
        free = int(locked[0]) - int(running)
        if free <= 0:
            return []
        ids = list(
            conn.scalars(
                select(_JOBS.c.id)
                .where(
                    _JOBS.c.array_id == array_id,
                    _JOBS.c.hold == HOLD_SLOT,
                    _JOBS.c.status == _QUEUED,
                )
                .order_by(_JOBS.c.array_index)
                .limit(free)
            )
        )
        if not ids:
            return []
        rows = conn.execute(
            update(_JOBS)
            .where(_JOBS.c.id.in_(ids), _JOBS.c.hold == HOLD_SLOT)
            .values(hold=None)
            .returning(*_JOBS.c)
        ).all()
    taken = [job_from(row._mapping) for row in rows]
    return sorted(taken, key=lambda row: row.array_index or 0)


def capped_arrays(registry: Registry) -> list[str]:
    """Arrays with a cap and a task still waiting for a slot."""
    query = (
        select(_JOBS.c.array_id)
        .where(_JOBS.c.hold == HOLD_SLOT, _JOBS.c.status == _QUEUED)
        .distinct()
    )
    with registry.connections.begin() as conn:
        return [array for array in conn.scalars(query) if array is not None]


def get_array(registry: Registry, array_id: str) -> ArrayRow | None:
    with registry.connections.begin() as conn:
        row = conn.execute(select(_ARRAYS).where(_ARRAYS.c.id == array_id)).first()
    if row is None:
        return None
    array = ArrayRow(**row._mapping)
    array.created_at = as_utc(array.created_at) or array.created_at
    return array


def array_tasks(registry: Registry, array_ids: Sequence[str]) -> dict[str, list[JobRow]]:
    """The tasks of these arrays, by array, in index order."""
    query = (
        select(_JOBS)
        .where(_JOBS.c.array_id.in_(list(array_ids)))
        .order_by(_JOBS.c.array_id, _JOBS.c.array_index)
    )
    tasks: dict[str, list[JobRow]] = {array: [] for array in array_ids}
    with registry.connections.begin() as conn:
        for row in conn.execute(query):
            job = job_from(row._mapping)
            tasks[cast(str, job.array_id)].append(job)
    return tasks


def list_arrays(registry: Registry, limit: int | None = None) -> list[ArrayRow]:
    """Arrays, newest first."""
    query = select(_ARRAYS).order_by(_ARRAYS.c.created_at.desc(), _ARRAYS.c.id)
    if limit is not None:
        query = query.limit(limit)
    with registry.connections.begin() as conn:
        arrays = [ArrayRow(**row._mapping) for row in conn.execute(query)]
    for array in arrays:
        array.created_at = as_utc(array.created_at) or array.created_at
    return arrays


def param_names(array: ArrayRow) -> list[str]:
    """A sweep's parameter names, in order (none for a plain array)."""
    return list(json.loads(array.params)) if array.params else []


def cancel_queued_tasks(registry: Registry, array_id: str, values: dict[str, Any]) -> list[str]:
    """Cancel every queued task of an array (held or not) in one statement, the
    move checked against the lifecycle table as every status write is; the ids
    cancelled."""
    sources = [s.value for s in transition_sources(JobStatus.CANCELLED, [JobStatus.QUEUED])]
    stmt = (
        update(_JOBS)
        .where(_JOBS.c.array_id == array_id, _JOBS.c.status.in_(sources))
        .values(status=JobStatus.CANCELLED.value, hold=None, **values)
        .returning(_JOBS.c.id)
    )
    with registry.connections.begin() as conn:
        return list(conn.scalars(stmt))


def held_dependents_of(registry: Registry, job_ids: Sequence[str]) -> list[str]:
    """The held jobs that wait on any of ``job_ids``, each once."""
    found: set[str] = set()
    with registry.connections.begin() as conn:
        for start in range(0, len(job_ids), 900):
            chunk = list(job_ids[start : start + 900])
            query = (
                select(_DEPENDENCIES.c.job_id)
                .join(_JOBS, _JOBS.c.id == _DEPENDENCIES.c.job_id)
                .where(_DEPENDENCIES.c.on_job.in_(chunk), _JOBS.c.hold == HOLD_AFTER)
            )
            found.update(conn.scalars(query))
    return sorted(found)
