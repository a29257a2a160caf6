"""The daily summary's figures: what ran, what broke, how busy the GPUs were, what
ends next, for one calendar day in ``UGRO_TIMEZONE``.

``gather`` reads the day from the registry (jobs, attempts, events, health samples)
and the few log lines it quotes; ``summarize`` turns that into a ``DaySummary``
and is pure. ``ugro.summary.render`` renders it, ``ugro.summary.daily`` writes and
sends it once a day.

The resource figures (time-weighted GPU and CPU use) are in ``ugro.summary.resources``,
the GPU-hours by user and group in ``ugro.summary.usage``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, func, or_, select

from ugro.execution.runner import last_error_line
from ugro.health.samples import NodeSample, samples
from ugro.jobs.lifecycle import JobStatus
from ugro.jobs.paths import JobPaths
from ugro.progress.base import ProgressInfo
from ugro.registry.models import AttemptRow, EventRow, JobRow, as_utc, gpu_list, job_from
from ugro.registry.store import Registry
from ugro.settings import Settings
from ugro.summary.day import Day
from ugro.summary.model import (
    ActiveRun,
    DaySummary,
    EventLine,
    Events,
    Experiments,
    FailedJob,
    JobLine,
    OomLine,
    OutdatedRun,
    ProgressOverview,
)
from ugro.summary.resources import GAP_SECONDS, jobs_waiting, resources
from ugro.summary.usage import gpu_hours

#: Bumped when a field of the metrics JSON changes meaning or goes away.
SCHEMA_VERSION = 1
#: Events listed one by one; every other kind is only counted.
KEY_EVENT_KINDS = frozenset(
    {"stuck", "job_lost", "orphans_killed", "breaker_open", "breaker_closed", "health_critical"}
)
#: At most this many key events are listed; the rest are counted.
MAX_LISTED_EVENTS = 200
#: Ends whose log line says more than the job's error column ("out of memory").
_QUOTE_LOG_FOR = frozenset({"oom", "killed", "error"})
_FAILED = frozenset({JobStatus.FAILED.value, JobStatus.LOST.value})
_ACTIVE = frozenset({JobStatus.QUEUED.value, JobStatus.PLACED.value, JobStatus.RUNNING.value})


# Reading the day -------------------------------------------------------------------


@dataclass
class DayInputs:
    """Everything the figures are made from, read once."""

    day: Day
    now: datetime
    jobs: list[JobRow]
    #: Every attempt of those jobs.
    attempts: list[AttemptRow]
    #: The first attempt's start of each active job.
    first_started: dict[str, datetime]
    events: list[EventRow]
    samples: list[NodeSample]
    #: Finished jobs whose end was UGRO_OUTDATED_AFTER before some moment of the day.
    newly_outdated: list[JobRow]
    #: The last error-looking line of a failed job's log, by job id.
    log_lines: dict[str, str] = field(default_factory=dict)
    #: Finished jobs outdated at the day's end (ended UGRO_OUTDATED_AFTER before it).
    outdated_total: int = 0


def gather(registry: Registry, settings: Settings, day: Day, now: datetime) -> DayInputs:
    """Read one day from the registry and the failed jobs' logs."""
    since, until = day.since, day.until
    jobs = _select_jobs(registry, *_alive_during(since, until))
    outdated_window = timedelta(seconds=settings.outdated_after)
    newly_outdated = _select_jobs(
        registry,
        JobRow.status == JobStatus.FINISHED.value,
        JobRow.finished_at >= since - outdated_window,
        JobRow.finished_at < until - outdated_window,
    )
    count_outdated = (
        select(func.count())
        .select_from(JobRow.__table__)
        .where(
            JobRow.status == JobStatus.FINISHED.value,
            JobRow.finished_at < until - outdated_window,
        )
    )
    # Every attempt of the day's jobs, not only those that started or ended today: a
    # job's waits begin at the end of the attempt before (see ``queue_waits``).
    query = (
        select(AttemptRow.__table__)
        .join(JobRow.__table__, JobRow.id == AttemptRow.job_id)
        .where(*_alive_during(since, until))
    )
    active_ids = [job.id for job in jobs if job.status in _ACTIVE]
    first = (
        select(AttemptRow.job_id, func.min(AttemptRow.started_at))
        .where(AttemptRow.job_id.in_(active_ids))
        .group_by(AttemptRow.job_id)
    )
    with registry.engine.connect() as conn:
        outdated_count = int(conn.execute(count_outdated).scalar_one())
        attempts = [_attempt_from(dict(row._mapping)) for row in conn.execute(query)]
        first_started = {
            job_id: started
            for job_id, at in conn.execute(first)
            if (started := as_utc(at)) is not None
        }
    inputs = DayInputs(
        day=day,
        now=now,
        jobs=jobs,
        attempts=attempts,
        first_started=first_started,
        events=registry.events_between(since, until),
        samples=samples(registry, since, until),
        newly_outdated=newly_outdated,
        outdated_total=outdated_count,
    )
    for job in jobs:
        ended_today = job.finished_at is not None and since <= job.finished_at < until
        if job.status in _FAILED and ended_today and job.exit_reason in _QUOTE_LOG_FOR:
            line = last_error_line(JobPaths(settings.jobs_dir, job.id).training_log)
            if line:
                inputs.log_lines[job.id] = line
    return inputs


def _alive_during(since: datetime, until: datetime) -> tuple[ColumnElement[bool], ...]:
    """Jobs submitted before ``until`` and not ended before ``since``."""
    return (
        JobRow.created_at < until,
        or_(JobRow.finished_at.is_(None), JobRow.finished_at >= since),
    )


def _select_jobs(registry: Registry, *where: ColumnElement[bool]) -> list[JobRow]:
    query = select(JobRow.__table__).where(*where).order_by(JobRow.created_at, JobRow.id)
    with registry.engine.connect() as conn:
        return [job_from(row._mapping) for row in conn.execute(query)]


def _attempt_from(values: dict[str, object]) -> AttemptRow:
    for key in ("started_at", "ended_at"):
        values[key] = as_utc(values[key])  # type: ignore[arg-type]
    return AttemptRow(**values)


# The figures (pure) ----------------------------------------------------------------


def summarize(
    inputs: DayInputs, long_run_days: float, gap_seconds: float = GAP_SECONDS
) -> DaySummary:
    """The day's figures from what ``gather`` read. Pure."""
    day = inputs.day
    return DaySummary(
        schema_version=SCHEMA_VERSION,
        date=day.date,
        timezone=day.tz.key,
        since=day.local(day.since),
        until=day.local(day.until),
        generated_at=day.local(inputs.now),
        experiments=_experiments(inputs),
        resources=resources(
            inputs.samples,
            day,
            gap_seconds,
            jobs_waiting(inputs.jobs, inputs.attempts, inputs.events, day.since, day.until),
        ),
        # Every attempt that ran during the day is one of ``inputs.attempts``: its job
        # was submitted before it started and ended after it did.
        gpu_hours=gpu_hours(inputs.jobs, inputs.attempts, day.since, day.until, inputs.now),
        events=_events(inputs),
        progress=_progress(inputs, long_run_days),
    )


def status_at_end(job: JobRow, until: datetime) -> str:
    """A job's status when the day ended, as far as the registry tells: its
    status now, unless it ended after the day (then it was running or queued)."""
    if job.finished_at is None or job.finished_at < until:
        return job.status
    if job.started_at is not None and job.started_at < until:
        return JobStatus.RUNNING.value
    return JobStatus.QUEUED.value


def _within(moment: datetime | None, day: Day) -> bool:
    return moment is not None and day.since <= moment < day.until


def _experiments(inputs: DayInputs) -> Experiments:
    day = inputs.day
    by_id = {job.id: job for job in inputs.jobs}
    by_status = Counter(status_at_end(job, day.until) for job in inputs.jobs)
    started: dict[str, JobLine] = {}
    for attempt in sorted(inputs.attempts, key=lambda a: a.started_at):
        job = by_id.get(attempt.job_id)
        if job is None or not _within(attempt.started_at, day):
            continue
        line = started.get(job.id)
        if line is None:
            started[job.id] = JobLine(
                id=job.id,
                name=job.name,
                node=attempt.node,
                gpus=json.loads(attempt.gpu_indices or "[]"),
                at=day.local(attempt.started_at),
                attempt=attempt.number,
            )
        else:
            line.attempt = attempt.number  # the day's last attempt
    ended = [job for job in inputs.jobs if _within(job.finished_at, day)]
    finished = [_ended_line(job, day) for job in ended if job.status == JobStatus.FINISHED.value]
    cancelled = [_ended_line(job, day) for job in ended if job.status == "cancelled"]
    failed = [
        FailedJob(
            id=job.id,
            name=job.name,
            node=job.node,
            at=day.local(job.finished_at),  # type: ignore[arg-type]
            attempt=job.attempt,
            exit_reason=job.exit_reason,
            error=_error_line(job, inputs.log_lines.get(job.id)),
        )
        for job in ended
        if job.status in _FAILED
    ]
    failed_ids = {job.id for job in failed}
    retried = sum(
        1
        for attempt in inputs.attempts
        if _within(attempt.ended_at, day)
        and attempt.exit_reason not in (None, "ok", "interrupted", "preempted", "cancelled")
        and attempt.job_id not in failed_ids
    )
    return Experiments(
        total=len(inputs.jobs),
        by_status=dict(sorted(by_status.items())),
        started=list(started.values()),
        finished=sorted(finished, key=lambda line: line.at),
        failed=sorted(failed, key=lambda line: line.at),
        cancelled=sorted(cancelled, key=lambda line: line.at),
        failed_attempts_retried=retried,
    )


def _ended_line(job: JobRow, day: Day) -> JobLine:
    assert job.finished_at is not None
    duration = None
    if job.started_at is not None:
        duration = round((job.finished_at - job.started_at).total_seconds(), 1)
    return JobLine(
        id=job.id,
        name=job.name,
        node=job.node,
        gpus=gpu_list(job),
        at=day.local(job.finished_at),
        attempt=job.attempt,
        duration_s=duration,
    )


def _error_line(job: JobRow, log_line: str | None) -> str:
    """What broke, in one line: the exception line of its log when the error column
    only names the kind of end (``out of memory``), else the error column."""
    error = (job.error or "").strip()
    if log_line and log_line != error:
        return f"{error}: {log_line}" if error and job.exit_reason != "error" else log_line
    if error:
        return error
    if job.exit_code is not None:
        return f"exit code {job.exit_code}"
    return job.exit_reason or "unknown"


# Events ----------------------------------------------------------------------------


def _events(inputs: DayInputs) -> Events:
    day = inputs.day
    counts = Counter(event.kind for event in inputs.events)
    key = [
        EventLine(
            at=day.local(event.created_at),
            kind=event.kind,
            node=event.node,
            job_id=event.job_id,
            message=event.message,
        )
        for event in inputs.events
        if event.kind in KEY_EVENT_KINDS
    ]
    names = {job.id: job.name for job in inputs.jobs}
    ooms = [
        OomLine(
            job_id=a.job_id,
            name=names.get(a.job_id, a.job_id),
            attempt=a.number,
            node=a.node,
            at=day.local(a.ended_at),  # type: ignore[arg-type]
        )
        for a in sorted(inputs.attempts, key=lambda a: a.ended_at or a.started_at)
        if a.exit_reason == "oom" and _within(a.ended_at, day)
    ]
    outdated = {
        job.id: OutdatedRun(
            job_id=job.id,
            name=job.name,
            finished_at=day.local(job.finished_at),
        )
        for job in inputs.newly_outdated
        if job.finished_at is not None
    }
    return Events(
        counts=dict(sorted(counts.items())),
        key=key[:MAX_LISTED_EVENTS],
        key_not_listed=max(0, len(key) - MAX_LISTED_EVENTS),
        stuck_runs_stopped=counts.get("stuck", 0),
        critical_alerts=counts.get("health_critical", 0),
        ooms=ooms,
        outdated=sorted(outdated.values(), key=lambda run: run.finished_at),
        outdated_total=inputs.outdated_total,
    )


# Progress --------------------------------------------------------------------------


def _progress(inputs: DayInputs, long_run_days: float) -> ProgressOverview:
    day = inputs.day
    reference = min(day.until, inputs.now)
    runs: list[ActiveRun] = []
    for job in inputs.jobs:
        status = status_at_end(job, day.until)
        if status not in _ACTIVE:
            continue
        info, _ = _progress_of(job)
        planned = (info.total_epochs if info else None) or _planned_epochs(job)
        started = inputs.first_started.get(job.id)
        running_days = None
        if started is not None and status == JobStatus.RUNNING.value:
            running_days = round((reference - started).total_seconds() / 86400, 5)
        eta = info.eta_seconds if info else None
        ends_at = None
        if info is not None and eta is not None and info.last_update is not None:
            ends_at = day.local(info.last_update + timedelta(seconds=eta))
        runs.append(
            ActiveRun(
                id=job.id,
                name=job.name,
                status=status,
                node=job.node,
                completed_epochs=info.completed_epochs if info else 0,
                total_epochs=planned,
                percent=round(info.percent, 1) if info and planned else None,
                started_at=day.local(started) if started else None,
                running_days=running_days,
                eta_seconds=eta,
                ends_at=ends_at,
            )
        )
    far = datetime.max.replace(tzinfo=UTC)
    runs.sort(key=lambda run: (run.ends_at or far, run.id))
    counted = [run for run in runs if run.total_epochs]
    done = sum(min(run.completed_epochs, run.total_epochs or 0) for run in counted)
    planned_total = sum(run.total_epochs or 0 for run in counted)
    return ProgressOverview(
        active=len(runs),
        epochs_done=done,
        epochs_planned=planned_total,
        overall_percent=round(100 * done / planned_total, 1) if planned_total else None,
        above_90=[run.id for run in runs if run.percent is not None and run.percent > 90],
        long_run_days=long_run_days,
        long_runs=[
            run.id
            for run in runs
            if run.running_days is not None and run.running_days > long_run_days
        ],
        runs=runs,
    )


def _progress_of(job: JobRow) -> tuple[ProgressInfo | None, str | None]:
    if not job.progress:
        return None, None
    data = json.loads(job.progress)
    status = data.pop("status", None)
    return ProgressInfo.model_validate(data), status


def _planned_epochs(job: JobRow) -> int | None:
    epochs = json.loads(job.spec).get("epochs")
    return epochs if isinstance(epochs, int) else None


def build_summary(
    registry: Registry, settings: Settings, day: Day, now: datetime | None = None
) -> DaySummary:
    """Read and figure one day: ``summarize(gather(...))``."""
    inputs = gather(registry, settings, day, now or datetime.now(UTC))
    return summarize(inputs, settings.summary_long_run_days)
