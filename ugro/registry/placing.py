"""A dispatch pass's placements, written to the registry together.

A pass places several jobs at once: the head of the queue on the GPUs that ends
just freed. Written one by one, each placement is a transaction of its own: a
statement, then a commit, each a round trip to a server database, and on a busy
server those round trips are most of what a pass that places jobs costs.
``mark_placed`` writes a pass's placements in one transaction, one commit, and
on a server database in one statement for all the jobs that set the same
columns (a gang job's set ``members`` too). Each job is still its own
compare-and-set, queued to placed, checked against the lifecycle table as every
status write is: the statement changes a job only while it is queued, so one
cancelled or placed by someone else meanwhile is left as it is and reported
refused, and the others are placed all the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from sqlalchemy import Executable, Table

from ugro.jobs.lifecycle import JobStatus, transition_sources
from ugro.registry import statements as sql
from ugro.registry.models import JobRow

if TYPE_CHECKING:
    from ugro.registry.store import Registry


class JobPlacement(NamedTuple):
    """A job's placement as the registry records it."""

    job_id: str
    # Its columns: placement_token (what its worker's claim must name), node,
    # gpu_indices, placed_at and, for a gang job, members.
    values: dict[str, Any]


def mark_placed(registry: Registry, placements: Sequence[JobPlacement]) -> list[bool]:
    """Move each job queued -> placed with its placement's columns, all in one
    transaction (one commit); returns, placement by placement, whether the job
    was still queued and is placed now.

    Raises:
        RegistryUnreachable: the server did not answer; nothing is written (the
            transaction is rolled back), as for a lone ``transition``.
    """
    if not placements:
        return []
    shapes: dict[tuple[str, ...], list[JobPlacement]] = {}
    for placement in placements:
        shapes.setdefault(tuple(placement.values), []).append(placement)
    # A SQLite file has no round trip to save, and its planner, without statistics,
    # would read a list of ids through the status index (every queued job): there,
    # a statement a job, each finding its job by its key.
    size = 1 if registry.connections.keep else _PER_STATEMENT
    steps = [
        _placing(columns, group[i : i + size])
        for columns, group in shapes.items()
        for i in range(0, len(group), size)
    ]
    changed = {row["id"] for rows in registry.connections.write(*steps, rows=True) for row in rows}
    return [placement.job_id in changed for placement in placements]


_JOBS = cast(Table, JobRow.__table__)
# Jobs a statement: SQLite before 3.32 takes at most 999 parameters, and a job
# has up to 13 (its id in the IN list and in each column's CASE, then its value
# of each column). A pass places at most 64 (``dispatch.WINDOW``).
_PER_STATEMENT = 64
# (every status write passes the lifecycle table: queued -> placed must be allowed)
_SOURCES = tuple(s.value for s in transition_sources(JobStatus.PLACED, [JobStatus.QUEUED]))


def _placing(
    columns: tuple[str, ...], placements: list[JobPlacement]
) -> tuple[Executable, dict[str, Any]]:
    """The compare-and-set of several jobs that set the same ``columns``: one
    statement (built once per shape: its columns and how many jobs), bound with
    their ids and values."""
    stmt = sql.jobs_status(_JOBS, JobStatus.PLACED.value, _SOURCES, columns, len(placements))
    params: dict[str, Any] = {}
    for i, (job_id, values) in enumerate(placements):
        params[f"w_job_{i}"] = job_id
        params.update({f"v_{column}_{i}": value for column, value in values.items()})
    return stmt, params
