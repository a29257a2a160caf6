"""GPU time by user and group: the daily summary's "GPU-hours by user" table, and
what the exporter's ``ugro_gpu_seconds_total`` counts. Pure.

An attempt uses its job's GPUs on all its nodes (``ugro.registry.usage.all_gpus``) for as long
as it ran. Within a day, it counts from its start to its end, both clipped to the
day; one still running counts up to the day's end or now, whichever comes first,
and one whose end was never recorded although its job ended, up to the job's end.
A gang job's attempt has its row only once every member has ended, so it counts
from then on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel

from ugro.registry.usage import all_gpus

if TYPE_CHECKING:
    from ugro.registry.models import AttemptRow, JobRow


class UserGpuHours(BaseModel):
    #: Who submitted the jobs (None: jobs recorded before submitters were).
    user: str | None
    gpu_hours: float
    #: Their jobs that held GPUs during the day.
    jobs: int


class GroupGpuHours(BaseModel):
    #: The group the jobs count for (None: jobs submitted without one).
    group: str | None
    gpu_hours: float
    jobs: int


class GpuHours(BaseModel):
    """GPU-hours of the attempts that ran during the day, the most used first."""

    total: float
    by_user: list[UserGpuHours]
    #: Empty when none of the day's jobs has a group.
    by_group: list[GroupGpuHours]


def _overlap_seconds(started: datetime, ended: datetime, since: datetime, until: datetime) -> float:
    """How long [started, ended) lies within [since, until), in seconds."""
    return max(0.0, (min(ended, until) - max(started, since)).total_seconds())


def gpu_hours(
    jobs: Iterable[JobRow],
    attempts: Iterable[AttemptRow],
    since: datetime,
    until: datetime,
    now: datetime,
) -> GpuHours:
    """The GPU-hours ``attempts`` of ``jobs`` used within [since, until), by the
    jobs' user and, when any of them has one, by their group.

    Args:
        jobs: the jobs, with their user, group, GPUs and gang members.
        attempts: their attempts (those of other jobs are left out).
        since: the start of the day.
        until: its end.
        now: the present: no attempt counts beyond it.
    """
    by_id = {job.id: job for job in jobs}
    seconds: dict[str, float] = defaultdict(float)
    for attempt in attempts:
        job = by_id.get(attempt.job_id)
        if job is None:
            continue
        ended = attempt.ended_at or job.finished_at or now
        used = _overlap_seconds(attempt.started_at, min(ended, now), since, until)
        if used > 0:
            seconds[job.id] += used * all_gpus(job.gpus, job.members)
    users = _totals((by_id[job_id].user, used) for job_id, used in seconds.items())
    groups = _totals((by_id[job_id].group_name, used) for job_id, used in seconds.items())
    any_group = any(by_id[job_id].group_name is not None for job_id in seconds)
    return GpuHours(
        total=_hours(sum(seconds.values())),
        by_user=[
            UserGpuHours(user=user, gpu_hours=_hours(used), jobs=count)
            for user, used, count in users
        ],
        by_group=[
            GroupGpuHours(group=group, gpu_hours=_hours(used), jobs=count)
            for group, used, count in groups
        ]
        if any_group
        else [],
    )


def _totals(
    per_job: Iterable[tuple[str | None, float]],
) -> list[tuple[str | None, float, int]]:
    """(name, GPU-seconds, jobs) per name, the most GPU-seconds first (ties by name,
    None last)."""
    used: dict[str | None, float] = defaultdict(float)
    count: dict[str | None, int] = defaultdict(int)
    for name, seconds in per_job:
        used[name] += seconds
        count[name] += 1
    ranked = sorted(used, key=lambda name: (-used[name], name is None, name or ""))
    return [(name, used[name], count[name]) for name in ranked]


def _hours(seconds: float) -> float:
    return round(seconds / 3600, 3)
