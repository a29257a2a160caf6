"""What the daily summary holds: the figures of one day, as they go into
``YYYY-MM-DD_metrics.json`` (``ugro/schemas/summary.schema.json`` describes it).
Times are in the summary's timezone."""

from __future__ import annotations

import json
from datetime import date, datetime
from importlib import resources as package_files
from typing import Any

from pydantic import BaseModel

from ugro.summary.resources import Resources
from ugro.summary.usage import GpuHours


class JobLine(BaseModel):
    id: str
    name: str
    node: str | None
    gpus: list[int]
    at: datetime
    attempt: int
    duration_s: float | None = None


class FailedJob(BaseModel):
    id: str
    name: str
    node: str | None
    at: datetime
    attempt: int
    exit_reason: str | None
    error: str


class Experiments(BaseModel):
    #: Jobs alive at some time of the day, by their status at the day's end.
    total: int
    by_status: dict[str, int]
    started: list[JobLine]
    finished: list[JobLine]
    failed: list[FailedJob]
    cancelled: list[JobLine]
    #: Attempts that ended badly today and were retried (their job is not failed).
    failed_attempts_retried: int


class EventLine(BaseModel):
    at: datetime
    kind: str
    node: str | None
    job_id: str | None
    message: str


class OomLine(BaseModel):
    job_id: str
    name: str
    attempt: int
    node: str
    at: datetime


class OutdatedRun(BaseModel):
    job_id: str
    name: str
    finished_at: datetime


class Events(BaseModel):
    counts: dict[str, int]
    key: list[EventLine]
    key_not_listed: int
    stuck_runs_stopped: int
    critical_alerts: int
    ooms: list[OomLine]
    #: Runs that became outdated today (finished more than UGRO_OUTDATED_AFTER ago).
    outdated: list[OutdatedRun]
    #: Every run outdated at the day's end, those that became so today included.
    outdated_total: int = 0

    @property
    def total(self) -> int:
        """The day's events of every kind: what the page's Key events section counts
        (``key`` lists only some kinds, and at most ``MAX_LISTED_EVENTS`` of them)."""
        return sum(self.counts.values())


class ActiveRun(BaseModel):
    id: str
    name: str
    status: str
    node: str | None
    completed_epochs: int
    total_epochs: int | None
    percent: float | None
    started_at: datetime | None
    running_days: float | None
    eta_seconds: float | None
    ends_at: datetime | None


class ProgressOverview(BaseModel):
    active: int
    epochs_done: int
    epochs_planned: int
    overall_percent: float | None
    above_90: list[str]
    long_run_days: float
    long_runs: list[str]
    #: Active runs, the soonest to end first (those without an ETA last).
    runs: list[ActiveRun]


class DaySummary(BaseModel):
    schema_version: int
    date: date
    timezone: str
    since: datetime
    until: datetime
    generated_at: datetime
    experiments: Experiments
    resources: Resources
    #: GPU-hours by user and group, from the registry's attempts.
    gpu_hours: GpuHours
    events: Events
    progress: ProgressOverview

    def to_json(self) -> dict[str, object]:
        return self.model_dump(mode="json")


def metrics_schema() -> dict[str, Any]:
    """The JSON Schema of ``YYYY-MM-DD_metrics.json`` (shipped in ``ugro/schemas/``)."""
    text = package_files.files("ugro").joinpath("schemas/summary.schema.json").read_text("utf-8")
    return dict(json.loads(text))
