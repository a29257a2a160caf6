"""What fair share and quotas read of the registry: recent attempts' use of GPUs
by user and group, whose each job is, and what each holds and has queued now."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

from sqlalchemy import Select, Table, func, or_, select

from ugro.jobs.lifecycle import ExitReason, JobStatus
from ugro.registry.models import AttemptRow, JobRow, as_utc
from ugro.registry.store import Registry

_JOBS = cast(Table, JobRow.__table__)
_ATTEMPTS = cast(Table, AttemptRow.__table__)


@dataclass(frozen=True)
class Used:
    """One attempt's use of GPUs: by whom (and for which group), how many (on all
    its nodes), from when to when (unix s; ``ended`` None: still running)."""

    user: str
    gpus: int
    started: float
    ended: float | None
    group: str = ""


def recent_attempts(registry: Registry, since: float) -> list[Used]:
    """The attempts that ran after ``since`` (unix s), with their job's user and its
    GPUs on all its nodes."""
    after = datetime.fromtimestamp(since, UTC)
    query = (
        select(
            _JOBS.c.user,
            _JOBS.c.group_name,
            _JOBS.c.gpus,
            _JOBS.c.members,
            _ATTEMPTS.c.started_at,
            _ATTEMPTS.c.ended_at,
        )
        .join(_JOBS, _JOBS.c.id == _ATTEMPTS.c.job_id)
        .where(or_(_ATTEMPTS.c.ended_at.is_(None), _ATTEMPTS.c.ended_at >= after))
    )
    found = []
    with registry.connections.begin() as conn:
        for user, group, gpus, members, started, ended in conn.execute(query):
            start = cast(datetime, as_utc(started)).timestamp()
            end = None if ended is None else cast(datetime, as_utc(ended)).timestamp()
            found.append(Used(user or "", all_gpus(gpus, members), start, end, group or ""))
    return found


def all_gpus(gpus: int, members: str | None) -> int:
    """A job's GPUs on all its nodes (a gang job's ``members``: one a node)."""
    nodes = len(json.loads(members)) if members else 1
    return gpus * max(nodes, 1)


#: Whose a job is: (user, group), either None when not recorded.
Owner = tuple[str | None, str | None]


def _by_ids(
    registry: Registry, job_ids: Sequence[str], query: Callable[[list[str]], Select[Any]]
) -> Iterator[Any]:
    """The rows of ``query`` of each chunk of ``job_ids``, in one transaction
    (SQLite before 3.32 takes at most 999 parameters a statement)."""
    with registry.connections.begin() as conn:
        for start in range(0, len(job_ids), 900):
            yield from conn.execute(query(list(job_ids[start : start + 900])))


def owners_of(registry: Registry, job_ids: Sequence[str]) -> dict[str, Owner]:
    """Who queued each of these jobs, and for which group."""
    rows = _by_ids(
        registry,
        job_ids,
        lambda ids: select(_JOBS.c.id, _JOBS.c.user, _JOBS.c.group_name).where(_JOBS.c.id.in_(ids)),
    )
    return {job_id: (user, group) for job_id, user, group in rows}


def submitted_at(registry: Registry, job_ids: Sequence[str]) -> dict[str, float]:
    """When each of these jobs was submitted (s since the epoch)."""
    rows = _by_ids(
        registry,
        job_ids,
        lambda ids: select(_JOBS.c.id, _JOBS.c.created_at).where(_JOBS.c.id.in_(ids)),
    )
    return {job_id: cast(datetime, as_utc(at)).timestamp() for job_id, at in rows}


def held_by_owner(registry: Registry) -> dict[Owner, int]:
    """The GPUs held now (by placed and running jobs) by each (user, group)."""
    query = select(_JOBS.c.user, _JOBS.c.group_name, _JOBS.c.gpus, _JOBS.c.members).where(
        _JOBS.c.status.in_([JobStatus.PLACED.value, JobStatus.RUNNING.value])
    )
    held: dict[Owner, int] = {}
    with registry.connections.begin() as conn:
        for user, group, gpus, members in conn.execute(query):
            held[(user, group)] = held.get((user, group), 0) + all_gpus(gpus, members)
    return held


def queued_count(registry: Registry, kind: Literal["user", "group"], name: str) -> int:
    """How many jobs a user (or a group) has queued."""
    column = _JOBS.c.user if kind == "user" else _JOBS.c.group_name
    query = select(func.count()).where(column == name, _JOBS.c.status == JobStatus.QUEUED.value)
    with registry.connections.begin() as conn:
        return int(conn.execute(query).scalar_one())


def preempted_counts(registry: Registry, job_ids: Sequence[str]) -> dict[str, int]:
    """How many times each of these jobs was preempted (those never were: absent)."""
    rows = _by_ids(
        registry,
        job_ids,
        lambda ids: (
            select(_ATTEMPTS.c.job_id, func.count())
            .where(
                _ATTEMPTS.c.job_id.in_(ids), _ATTEMPTS.c.exit_reason == ExitReason.PREEMPTED.value
            )
            .group_by(_ATTEMPTS.c.job_id)
        ),
    )
    return {job_id: int(n) for job_id, n in rows}
