"""Prebuilt SQL statements of a job's hot path: submit, place, claim, start, end.

Building an SQLAlchemy statement (and its cache key) costs more than SQLite takes
to run it. Each statement here is built once per shape (its table, the columns it
sets, the statuses it starts from) and bound with parameters on every call: the
same SQL, built once. Parameters of
set columns are named ``v_<column>``, and the job a statement is about ``w_job``
(and its attempt ``w_number``): a name of a column cannot be a parameter's.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Insert,
    Select,
    Table,
    Update,
    bindparam,
    case,
    insert,
    literal_column,
    select,
    update,
)


def bound(values: dict[str, Any]) -> dict[str, Any]:
    """Parameters for the ``v_<column>`` placeholders of a statement below."""
    return {f"v_{key}": value for key, value in values.items()}


def _status_in(jobs: Table, statuses: tuple[str, ...]) -> ColumnElement[bool]:
    """``status IN (...)`` with the statuses written into the SQL: a statement's set
    of statuses is part of its shape, and a list parameter would be expanded into
    the SQL again on every execution."""
    if not all(status.isidentifier() for status in statuses):
        raise ValueError(f"not a status: {statuses!r}")
    return jobs.c.status.in_([literal_column(f"'{status}'") for status in statuses])


@cache
def job_status(
    jobs: Table,
    new: str,
    sources: tuple[str, ...],
    columns: tuple[str, ...],
    claim: bool = False,
    token: bool = True,
    of_attempt: bool = False,
) -> Update:
    """UPDATE a job's status (and ``columns``) where it is in ``sources`` (with
    ``of_attempt``: and its attempt is ``w_attempt``); with ``claim``, also start
    its next attempt and return the row, only where its placement's lease token is
    ``w_token`` unless ``token`` is false (a placement and its claim in one
    statement, the token among ``columns``).

    The one statement that writes the status column. ``sources -> new`` comes
    checked against the lifecycle table by the registry's caller of this
    (``ugro.jobs.lifecycle.transition_sources``)."""
    values: dict[str, Any] = {column: bindparam(f"v_{column}") for column in columns}
    values["status"] = new
    where = [jobs.c.id == bindparam("w_job"), _status_in(jobs, sources)]
    if of_attempt:
        where.append(jobs.c.attempt == bindparam("w_attempt"))
    if claim:
        values["attempt"] = jobs.c.attempt + 1
        if token:
            where.append(jobs.c.placement_token == bindparam("w_token"))
    stmt = update(jobs).where(*where).values(**values)
    return stmt.returning(*jobs.c) if claim else stmt


@cache
def jobs_status(
    jobs: Table, new: str, sources: tuple[str, ...], columns: tuple[str, ...], count: int
) -> Update:
    """``job_status`` of ``count`` jobs in one statement (one round trip, whatever
    their number): job ``i`` is ``w_job_<i>`` and its value of each of ``columns``
    ``v_<column>_<i>``; it returns the id of each job it changed (those still in
    ``sources``)."""
    ids = [bindparam(f"w_job_{i}", type_=jobs.c.id.type) for i in range(count)]
    values: dict[str, Any] = {
        column: case(
            *(
                (jobs.c.id == job, bindparam(f"v_{column}_{i}", type_=jobs.c[column].type))
                for i, job in enumerate(ids)
            )
        )
        for column in columns
    }
    values["status"] = new
    where = [jobs.c.id.in_(ids), _status_in(jobs, sources)]
    return update(jobs).where(*where).values(**values).returning(jobs.c.id)


@cache
def attempt_end(attempts: Table, columns: tuple[str, ...]) -> Update:
    """UPDATE the ``columns`` of one attempt (``w_job``, ``w_number``)."""
    values: dict[str, Any] = {column: bindparam(f"v_{column}") for column in columns}
    return (
        update(attempts)
        .where(attempts.c.job_id == bindparam("w_job"), attempts.c.number == bindparam("w_number"))
        .values(**values)
    )


@cache
def job_by_id(jobs: Table) -> Select[Any]:
    return select(jobs).where(jobs.c.id == bindparam("w_job"))


@cache
def jobs_by_ids(jobs: Table) -> Select[Any]:
    """Several jobs by id (``ids``, a list), newest first."""
    return (
        select(jobs)
        .where(jobs.c.id.in_(bindparam("ids", expanding=True)))
        .order_by(jobs.c.created_at.desc(), jobs.c.id)
    )


@cache
def statuses_by_ids(jobs: Table) -> Select[Any]:
    """The status of several jobs by id (``ids``, a list)."""
    return select(jobs.c.id, jobs.c.status).where(jobs.c.id.in_(bindparam("ids", expanding=True)))


@cache
def held_dependents(dependencies: Table, jobs: Table) -> Select[Any]:
    """The jobs held by a hold (``w_hold``) that wait on one job (``w_on``)."""
    return (
        select(dependencies.c.job_id)
        .join(jobs, jobs.c.id == dependencies.c.job_id)
        .where(dependencies.c.on_job == bindparam("w_on"), jobs.c.hold == bindparam("w_hold"))
    )


@cache
def held(jobs: Table, statuses: tuple[str, ...]) -> Select[Any]:
    return select(jobs.c.id, jobs.c.node, jobs.c.gpu_indices, jobs.c.members).where(
        _status_in(jobs, statuses)
    )


@cache
def insert_into(table: Table) -> Insert:
    return insert(table)
