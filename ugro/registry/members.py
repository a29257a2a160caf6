"""A gang job's members in the registry: each member's claim, start and end.

A gang job's attempt has one member a node. Each member's worker claims its part
as a one-node job's worker claims the job: the first claim moves the job from
placed to running and starts the attempt, every claim inserts the member's row,
keyed by (job, attempt, rank), so a second delivery of a member's message finds
its row there and runs nothing. A claim names the placement's lease token, as a
one-node claim does: a message of an earlier placement claims nothing.

Every write here begins with a write to the job's row, so that the members of one
job take their turns (a row lock in PostgreSQL, the database's write lock in
SQLite): the member whose end leaves none running is the only one to see it, and
the one that finalises the attempt. It then clears the placement token in the same
commit, so no late member can join an attempt that is closing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, insert, select, update
from sqlalchemy.exc import IntegrityError

from ugro.jobs.lifecycle import JobStatus, transition_sources
from ugro.registry.models import JobRow, MemberRow, as_utc, job_from
from ugro.registry.store import Registry

_RUNNING = JobStatus.RUNNING.value
_JOBS = cast(Table, JobRow.__table__)
_MEMBERS = cast(Table, MemberRow.__table__)


@dataclass(frozen=True)
class MemberClaim:
    """Where one member runs: its rank, node, that node's address and host, its GPUs."""

    rank: int
    node: str
    address: str
    host: str
    gpu_indices: str  # JSON list


@dataclass(frozen=True)
class MemberEnd:
    """What a member's end leaves: every member of the attempt, as they are now, and
    whether this end is the one that finalises the attempt."""

    members: list[MemberRow]
    finalise: bool


def claim_member(
    registry: Registry, job_id: str, token: str, member: MemberClaim, claim: dict[str, Any]
) -> JobRow | None:
    """Claim one member of a placed gang job under lease ``token``: the first claim
    starts the attempt (placed -> running, attempt + 1, ``claim``'s values), later
    ones join it. Returns the job's row as it is now, or None when the member was
    claimed already, the job was placed again since, or it is not placed or
    running any more."""
    jobs = _JOBS
    sources = [s.value for s in transition_sources(JobStatus.RUNNING, [JobStatus.PLACED])]
    first = (
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.placement_token == token, jobs.c.status.in_(sources))
        .values(status=_RUNNING, attempt=jobs.c.attempt + 1, **claim)
    )
    join = (
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.placement_token == token, jobs.c.status == _RUNNING)
        .values(placement_token=jobs.c.placement_token)
    )
    try:
        with registry.connections.begin() as conn:
            if conn.execute(first).rowcount != 1 and conn.execute(join).rowcount != 1:
                return None
            row = job_from(conn.execute(select(jobs).where(jobs.c.id == job_id)).one()._mapping)
            conn.execute(
                insert(_MEMBERS).values(
                    job_id=job_id,
                    attempt=row.attempt,
                    rank=member.rank,
                    node=member.node,
                    address=member.address,
                    host=member.host,
                    gpu_indices=member.gpu_indices,
                    claimed_at=claim.get("started_at") or row.started_at,
                )
            )
    except IntegrityError:
        return None  # this member's claim was there: a second delivery
    return row


def start_member(
    registry: Registry, job_id: str, attempt: int, rank: int, pid: int, started_at: datetime
) -> None:
    """Record that a member's process started."""
    table = _MEMBERS
    with registry.connections.begin() as conn:
        conn.execute(
            update(table)
            .where(table.c.job_id == job_id, table.c.attempt == attempt, table.c.rank == rank)
            .values(pid=pid, started_at=started_at)
        )


def end_member(
    registry: Registry,
    job_id: str,
    attempt: int,
    rank: int,
    values: dict[str, Any],
    num_nodes: int,
    stopped: bool,
) -> MemberEnd:
    """Record a member's end (``values``: ended_at, exit_code, exit_signal,
    exit_reason, error; a member that ended already keeps its first end).

    The end finalises the attempt when it leaves no member of it running and either
    every member was claimed or the attempt is being stopped (``stopped``: a member
    failed, so one never claimed will never be); the job's placement token is then
    cleared in the same commit, so a late claim finds nothing to join."""
    jobs, table = _JOBS, _MEMBERS
    mine = (table.c.job_id == job_id) & (table.c.attempt == attempt)
    with registry.connections.begin() as conn:
        # The members of a job take their turns from here to the commit.
        open_attempt = conn.execute(
            update(jobs)
            .where(
                jobs.c.id == job_id,
                jobs.c.attempt == attempt,
                jobs.c.status == _RUNNING,
                jobs.c.placement_token.is_not(None),
            )
            .values(placement_token=jobs.c.placement_token)
        ).rowcount
        conn.execute(
            update(table)
            .where(mine, table.c.rank == rank, table.c.ended_at.is_(None))
            .values(**values)
        )
        members = _members(conn, mine)
        finalise = (
            open_attempt == 1
            and all(m.ended_at is not None for m in members)
            and (len(members) == num_nodes or stopped)
        )
        if finalise:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(placement_token=None))
    return MemberEnd(members, finalise)


def members_of(registry: Registry, job_id: str, attempt: int) -> list[MemberRow]:
    """The members of one attempt of a gang job, in rank order."""
    table = _MEMBERS
    with registry.connections.begin() as conn:
        return _members(conn, (table.c.job_id == job_id) & (table.c.attempt == attempt))


def latest_members(registry: Registry, jobs: Iterable[JobRow]) -> dict[str, list[MemberRow]]:
    """The members of each gang job's latest attempt, by job id (none for a job
    whose members never claimed)."""
    table = _MEMBERS
    found: dict[str, list[MemberRow]] = {}
    wanted = {job.id: job.attempt for job in jobs if job.attempt > 0}
    if not wanted:
        return found
    with registry.connections.begin() as conn:
        for member in _members(conn, table.c.job_id.in_(list(wanted))):
            if member.attempt == wanted[member.job_id]:
                found.setdefault(member.job_id, []).append(member)
    return found


def _members(conn: Connection, where: Any) -> list[MemberRow]:
    table = _MEMBERS
    rows = conn.execute(select(table).where(where).order_by(table.c.job_id, table.c.rank))
    members = []
    for row in rows:
        values = dict(row._mapping)
        for key in ("claimed_at", "started_at", "ended_at"):
            values[key] = as_utc(values[key])
        members.append(MemberRow(**values))
    return members
