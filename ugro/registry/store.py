"""The registry: jobs, attempts and events in SQL, the source of truth.

SQLite (WAL) in the data dir by default, any SQLAlchemy URL (PostgreSQL in a lab)
through ``UGRO_DATABASE_URL``. Redis holds live state that can be rebuilt from here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Executable,
    Table,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.pool import ConnectionPoolEntry

from ugro.errors import JobNotFound
from ugro.jobs.dependencies import HOLD_AFTER
from ugro.jobs.lifecycle import JobStatus, transition_sources
from ugro.registry import statements as sql
from ugro.registry.columns import add_missing_columns
from ugro.registry.connections import RegistryConnections, Step
from ugro.registry.models import (
    ArrayRow,
    AttemptRow,
    Base,
    DependencyRow,
    EventRow,
    JobRow,
    MemberRow,
    as_utc,
    job_from,
    tags_column,
    utcnow,
)
from ugro.registry.outage import CONNECT_TIMEOUT, watch_server


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # WAL lets the workers write while clients read; the busy timeout makes
    # concurrent writers queue up instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url``, with SQLite tuned for several processes at once."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(
        url,
        pool_pre_ping=True,
        pool_size=2,
        max_overflow=4,
        connect_args={"connect_timeout": CONNECT_TIMEOUT},
    )
    watch_server(engine)
    return engine


class Registry:
    """Reads and writes of the jobs, attempts and events tables."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        try:
            Base.metadata.create_all(self.engine)
        except (OperationalError, ProgrammingError, IntegrityError):
            # Another process created the tables between our check and our CREATE.
            Base.metadata.create_all(self.engine)
        added = add_missing_columns(self.engine, Base.metadata)
        self.connections = RegistryConnections(self.engine)
        if "ugro_jobs.tags" in added:
            self._fill_tags()

    def close(self) -> None:
        self.connections.close()
        self.engine.dispose()

    def _fill_tags(self) -> None:
        """The ``tags`` column of the jobs written before it was added, from their
        specs (once, as the column is added; again by a process that added it at
        the same moment, to the same values)."""
        query = select(JobRow.id, JobRow.spec).where(JobRow.tags.is_(None))
        with self.connections.begin() as conn:
            rows = [
                _with_tags({"id": job_id, "spec": spec}) for job_id, spec in conn.execute(query)
            ]
            filled = [{"w_id": row["id"], "tags": row["tags"]} for row in rows if row["tags"]]
            if filled:
                where = JobRow.id == bindparam("w_id")
                conn.execute(update(JobRow).where(where).values(tags=bindparam("tags")), filled)

    # Jobs ------------------------------------------------------------------------

    def create_job(self, **values: Any) -> None:
        self.create_jobs([values])

    def create_jobs(
        self,
        rows: Sequence[dict[str, Any]],
        dependencies: Sequence[dict[str, Any]] = (),
        arrays: Sequence[dict[str, Any]] = (),
    ) -> None:
        """Insert several jobs in one transaction (one commit), with the arrays they
        are tasks of and what they wait on (``ugro.registry.holds``): all or none."""
        steps: list[Step] = [(sql.insert_into(_ARRAYS), list(arrays))] if arrays else []
        steps.append((sql.insert_into(_JOBS), [_with_tags(row) for row in rows]))
        if dependencies:
            steps.append((sql.insert_into(_DEPENDENCIES), list(dependencies)))
        self.connections.write(*steps)

    def delete_job(self, job_id: str) -> None:
        """Remove a job that was never accepted (a rolled-back submission)."""
        self.delete_jobs([job_id])

    def delete_jobs(self, job_ids: Sequence[str]) -> None:
        """Remove jobs that were never accepted (a rolled-back submission)."""
        ids = list(job_ids)
        with self.connections.begin() as conn:
            arrays = select(JobRow.array_id).where(JobRow.id.in_(ids), JobRow.array_id.is_not(None))
            conn.execute(delete(ArrayRow).where(ArrayRow.id.in_(arrays.scalar_subquery())))
            conn.execute(delete(AttemptRow).where(AttemptRow.job_id.in_(ids)))
            conn.execute(delete(MemberRow).where(MemberRow.job_id.in_(ids)))
            conn.execute(delete(DependencyRow).where(DependencyRow.job_id.in_(ids)))
            conn.execute(delete(JobRow).where(JobRow.id.in_(ids)))

    def get_job(self, job_id: str) -> JobRow:
        row = self.connections.first(sql.job_by_id(_JOBS), {"w_job": job_id})
        if row is None:
            raise JobNotFound(f"no job {job_id!r}: `ugro list` shows the jobs there are")
        return job_from(row)

    def find_job(self, prefix: str) -> JobRow:
        """The one job whose id is or starts with ``prefix``."""
        try:
            return self.get_job(prefix)
        except JobNotFound:
            pass
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self.connections.begin() as conn:
            rows = conn.execute(
                select(JobRow.__table__).where(JobRow.id.like(pattern, escape="\\")).limit(2)
            ).all()
        if len(rows) == 1:
            return job_from(rows[0]._mapping)
        if rows:
            raise JobNotFound(f"{prefix!r} matches several jobs: give more of the id")
        raise JobNotFound(f"no job {prefix!r}: `ugro list` shows the jobs there are")

    def list_jobs(
        self,
        statuses: Iterable[JobStatus] | None = None,
        ids: Sequence[str] | None = None,
        limit: int | None = None,
        tasks: bool = True,
        user: str | None = None,
        group: str | None = None,
        tags: Sequence[str] = (),
    ) -> list[JobRow]:
        """Jobs, newest first (``tasks``: with the tasks of arrays; ``user``,
        ``group``: only theirs; ``tags``: only those with every one of them)."""
        plain = user is None and group is None and not tags
        if ids is not None and statuses is None and limit is None and plain:
            chunks = _chunks(ids)
            with self.connections.begin() as conn:
                rows = [
                    job_from(row._mapping)
                    for chunk in chunks
                    for row in conn.execute(sql.jobs_by_ids(_JOBS), {"ids": chunk})
                ]
            if len(chunks) > 1:  # newest first across the chunks too
                rows.sort(key=lambda row: row.id)
                rows.sort(key=lambda row: row.created_at, reverse=True)
            return rows
        query = select(JobRow.__table__).order_by(JobRow.created_at.desc(), JobRow.id)
        if statuses is not None:
            query = query.where(JobRow.status.in_([s.value for s in statuses]))
        if ids is not None:
            query = query.where(JobRow.id.in_(list(ids)))
        if not tasks:
            query = query.where(JobRow.array_id.is_(None))
        if user is not None:
            query = query.where(JobRow.user == user)
        if group is not None:
            query = query.where(JobRow.group_name == group)
        for tag in tags:
            # Holds "tag" (quoted: whole) when taking it out changes the column. Not
            # LIKE, which ignores case in SQLite; replace() does not, in any dialect.
            query = query.where(JobRow.tags != func.replace(JobRow.tags, json.dumps(tag), ""))
        if limit is not None:
            query = query.limit(limit)
        with self.connections.begin() as conn:
            return [job_from(row._mapping) for row in conn.execute(query)]

    def statuses(self, ids: Sequence[str]) -> dict[str, str]:
        """The status of each of these jobs that exists, by id: a read of two columns,
        for a wait that looks for what changed among thousands."""
        with self.connections.begin() as conn:
            return {
                job_id: status
                for chunk in _chunks(ids)
                for job_id, status in conn.execute(sql.statuses_by_ids(_JOBS), {"ids": chunk})
            }

    def held_gpus(self) -> dict[str, dict[int, str]]:
        """GPUs that placed and running jobs hold, by node and index (job id)."""
        query = sql.held(_JOBS, (JobStatus.PLACED.value, JobStatus.RUNNING.value))
        held: dict[str, dict[int, str]] = {}
        for row in self.connections.rows(query, {}):
            if row["members"]:  # a gang job: every member's node
                placement = json.loads(row["members"])
            elif row["node"] and row["gpu_indices"]:
                placement = [(row["node"], json.loads(row["gpu_indices"]))]
            else:
                continue
            for node, indices in placement:
                for index in indices:
                    held.setdefault(node, {})[int(index)] = row["id"]
        return held

    def transition(
        self,
        job_id: str,
        new: JobStatus,
        expect: Iterable[JobStatus] | None = None,
        of_attempt: int | None = None,
        **values: Any,
    ) -> bool:
        """Compare-and-set ``status`` to ``new`` (and ``values``) from a status in
        ``expect`` (None: any status allowed to reach ``new``), and, with
        ``of_attempt``, only while that is still the job's attempt: the end of an
        attempt never moves the job on from a later one.

        Returns False (and changes nothing) when the job is in another status (or
        attempt) by then: someone else got there first.

        Raises:
            TransitionError: ``expect`` names a status from which the lifecycle
                table does not allow ``new`` (nothing is written).
        """
        [changed] = self.connections.write(_status_update(job_id, new, expect, values, of_attempt))
        return bool(changed == 1)

    def claim(
        self, job_id: str, expect: Iterable[JobStatus], token: str, **values: Any
    ) -> JobRow | None:
        """``transition`` to running that starts the job's next attempt (attempt + 1)
        and hands back the row as it is now, or None when someone else got there
        first or the job's placement is no longer the one of lease ``token``: one
        statement, ``UPDATE ... RETURNING``.

        Raises:
            TransitionError: as ``transition`` does.
        """
        row = self.connections.first(*_claim(job_id, expect, token, values))
        return None if row is None else job_from(row)

    def place_and_claim(
        self, job_id: str, token: str, placed: dict[str, Any], claim: dict[str, Any]
    ) -> JobRow | None:
        """For a job that the worker of its GPU takes at once: its placement under
        lease ``token`` (``placed``: the placement's columns) and its ``claim`` in
        one statement (``UPDATE ... RETURNING``), queued to running, as a placement
        then a claim in one transaction would leave it (no one could see it placed
        between the two). None when it was not queued."""
        sources = _sources(JobStatus.RUNNING, [JobStatus.QUEUED])
        values = {**placed, "placement_token": token, **claim}
        stmt = sql.job_status(
            _JOBS, JobStatus.RUNNING.value, sources, tuple(values), claim=True, token=False
        )
        row = self.connections.first(stmt, {"w_job": job_id, **sql.bound(values)})
        return None if row is None else job_from(row)

    def end_attempt_with_status(
        self,
        job_id: str,
        number: int,
        attempt: dict[str, Any],
        new: JobStatus,
        expect: Iterable[JobStatus],
        **values: Any,
    ) -> tuple[bool, list[str]]:
        """``end_attempt`` and ``transition`` (of attempt ``number``) in one transaction
        (one commit). The attempt's end is recorded either way; returns whether the
        status changed, and the jobs held waiting on this one, read in the same
        transaction (``ugro.registry.holds.held_dependents``): what its end may let
        go, at no round trip of its own (one a job's end was 7 % of W2).

        Raises:
            TransitionError: as ``transition`` does (nothing is written, the
                attempt's end neither).
        """
        status = _status_update(job_id, new, expect, values, number)
        waiting = (
            sql.held_dependents(_DEPENDENCIES, _JOBS),
            {"w_on": job_id, "w_hold": HOLD_AFTER},
        )
        _, changed, held = self.connections.write(
            _attempt_update(job_id, number, attempt), status, waiting, reads=1
        )
        return changed == 1, [row["job_id"] for row in held]

    def unsettled_progress(self, limit: int) -> list[JobRow]:
        """Ended jobs whose recorded progress still says running or stuck (or that the
        progress scan has not seen at all): the scan records their final state once."""
        ended = [JobStatus.FINISHED.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value]
        query = (
            select(JobRow.__table__)
            .where(
                JobRow.status.in_(ended),
                or_(
                    JobRow.progress.is_(None),
                    JobRow.progress.like('%"status": "running"%'),
                    JobRow.progress.like('%"status": "stuck"%'),
                ),
            )
            .order_by(JobRow.finished_at.desc())
            .limit(limit)
        )
        with self.connections.begin() as conn:
            return [job_from(row._mapping) for row in conn.execute(query)]

    def set_progress(self, job_id: str, progress: str, status: str) -> bool:
        """Record the progress scan's finding of a job it read in ``status`` (it does
        not change the status); False, recording nothing, when the status changed
        since: the job's end recorded its final progress, which must stand."""
        query = (
            update(JobRow)
            .where(JobRow.id == job_id, JobRow.status == status)
            .values(progress=progress)
        )
        with self.connections.begin() as conn:
            return bool(conn.execute(query).rowcount == 1)

    # Attempts and events ---------------------------------------------------------

    def start_attempt(self, **values: Any) -> None:
        self.connections.write((sql.insert_into(_ATTEMPTS), values))

    def end_attempt(self, job: JobRow, **values: Any) -> None:
        """The end of ``job``'s current attempt. One whose start was never recorded
        (its worker died, or was stopped, between the claim and the start's row)
        gets its row now, from what the job's row knows: each claim is an attempt,
        and counts against the job's retries."""
        [changed] = self.connections.write(_attempt_update(job.id, job.attempt, values))
        if changed == 0 and job.attempt > 0:
            started = job.started_at or values.get("ended_at") or utcnow()
            self.start_attempt(
                job_id=job.id,
                number=job.attempt,
                node=job.node or "",
                host="",  # (its start, which knew it, was never recorded)
                gpu_indices=job.gpu_indices or "[]",
                pid=None,
                started_at=started,
                **values,
            )

    def attempts(self, job_id: str) -> list[AttemptRow]:
        with self.connections.begin() as conn:
            rows = conn.execute(
                select(AttemptRow.__table__)
                .where(AttemptRow.job_id == job_id)
                .order_by(AttemptRow.number)
            )
            return [AttemptRow(**dict(row._mapping)) for row in rows]

    def add_event(
        self, kind: str, message: str, job_id: str | None = None, node: str | None = None
    ) -> None:
        with self.connections.begin() as conn:
            conn.execute(
                insert(EventRow).values(
                    created_at=utcnow(), kind=kind, job_id=job_id, node=node, message=message
                )
            )

    def events_between(self, since: datetime, until: datetime) -> list[EventRow]:
        """Events created in [since, until), oldest first."""
        query = (
            select(EventRow.__table__)
            .where(EventRow.created_at >= since, EventRow.created_at < until)
            .order_by(EventRow.created_at, EventRow.id)
        )
        with self.connections.begin() as conn:
            rows = [dict(row._mapping) for row in conn.execute(query)]
        for values in rows:
            values["created_at"] = as_utc(values["created_at"])
        return [EventRow(**values) for values in rows]

    def events(self, job_id: str | None = None) -> list[EventRow]:
        query = select(EventRow.__table__).order_by(EventRow.id)
        if job_id is not None:
            query = query.where(EventRow.job_id == job_id)
        with self.connections.begin() as conn:
            return [EventRow(**dict(row._mapping)) for row in conn.execute(query)]


_JOBS = cast(Table, JobRow.__table__)
_ARRAYS = cast(Table, ArrayRow.__table__)
_DEPENDENCIES = cast(Table, DependencyRow.__table__)
_ATTEMPTS = cast(Table, AttemptRow.__table__)


def _sources(new: JobStatus, expect: Iterable[JobStatus] | None) -> tuple[str, ...]:
    """The statuses a write of ``new`` may move a job from, checked against the
    lifecycle table (``transition_sources``): every status write passes here."""
    return tuple(status.value for status in transition_sources(new, expect))


def _status_update(
    job_id: str,
    new: JobStatus,
    expect: Iterable[JobStatus] | None,
    values: dict[str, Any],
    of_attempt: int | None = None,
) -> tuple[Executable, dict[str, Any]]:
    """A job's compare-and-set status change (of that attempt, with ``of_attempt``):
    the statement and its parameters (plain values: each is a parameter of a
    statement built once per shape)."""
    guarded = of_attempt is not None
    stmt = sql.job_status(
        _JOBS, new.value, _sources(new, expect), tuple(values), of_attempt=guarded
    )
    params = {"w_job": job_id, **sql.bound(values)}
    if guarded:
        params["w_attempt"] = of_attempt
    return stmt, params


def _claim(
    job_id: str, expect: Iterable[JobStatus], token: str, values: dict[str, Any]
) -> tuple[Executable, dict[str, Any]]:
    sources = _sources(JobStatus.RUNNING, expect)
    stmt = sql.job_status(_JOBS, JobStatus.RUNNING.value, sources, tuple(values), claim=True)
    return stmt, {"w_job": job_id, "w_token": token, **sql.bound(values)}


def _attempt_update(
    job_id: str, number: int, values: dict[str, Any]
) -> tuple[Executable, dict[str, Any]]:
    stmt = sql.attempt_end(_ATTEMPTS, tuple(values))
    return stmt, {"w_job": job_id, "w_number": number, **sql.bound(values)}


# Ids per statement of a read by ids: SQLite before 3.32 takes at most 999 parameters.
_IDS_PER_READ = 900


def _with_tags(row: dict[str, Any]) -> dict[str, Any]:
    """A new job's row with its ``tags`` column, read from its spec when not given."""
    if "tags" in row or "spec" not in row:
        return row
    spec = row["spec"]
    # (a spec without tags, the most common, is told by its text: no parse for it)
    if '"tags":[]' in spec:
        return {**row, "tags": None}
    return {**row, "tags": tags_column(json.loads(spec).get("tags"))}


def _chunks(ids: Sequence[str]) -> list[list[str]]:
    ids = list(ids)
    return [ids[i : i + _IDS_PER_READ] for i in range(0, len(ids), _IDS_PER_READ)]
