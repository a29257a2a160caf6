"""What fair share reads of the registry: recent attempts' use of GPUs by user, and
who queued which job."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Table, or_, select

from ugro.registry.models import AttemptRow, JobRow, as_utc
from ugro.registry.store import Registry

_JOBS = cast(Table, JobRow.__table__)
_ATTEMPTS = cast(Table, AttemptRow.__table__)


@dataclass(frozen=True)
class Used:
    """One attempt's use of GPUs: by whom, how many (on all its nodes), from when
    to when (unix s; ``ended`` None: still running)."""

    user: str
    gpus: int
    started: float
    ended: float | None


def recent_attempts(registry: Registry, since: float) -> list[Used]:
    """The attempts that ran after ``since`` (unix s), with their job's user and its
    GPUs on all its nodes."""
    after = datetime.fromtimestamp(since, UTC)
    query = (
        select(
            _JOBS.c.user,
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
        for user, gpus, members, started, ended in conn.execute(query):
            nodes = len(json.loads(members)) if members else 1  # a gang: one a member
            start = cast(datetime, as_utc(started)).timestamp()
            end = None if ended is None else cast(datetime, as_utc(ended)).timestamp()
            found.append(Used(user or "", gpus * max(nodes, 1), start, end))
    return found


def users_of(registry: Registry, job_ids: Sequence[str]) -> dict[str, str | None]:
    """Who queued each of these jobs."""
    users: dict[str, str | None] = {}
    with registry.connections.begin() as conn:
        for start in range(0, len(job_ids), 900):
            chunk = list(job_ids[start : start + 900])
            query = select(_JOBS.c.id, _JOBS.c.user).where(_JOBS.c.id.in_(chunk))
            users.update((job_id, user) for job_id, user in conn.execute(query))
    return users
