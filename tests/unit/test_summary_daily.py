"""The daily summary's pure decisions: which days are due, and the GPU-hours each
user's attempts used within a day."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from ugro.registry.models import AttemptRow, JobRow
from ugro.registry.usage import all_gpus
from ugro.summary.daily import due_days
from ugro.summary.usage import gpu_hours

DAY_START = datetime(2026, 6, 15, tzinfo=UTC)
DAY_END = DAY_START + timedelta(days=1)


@pytest.mark.timeout(10)
def test_due_days() -> None:
    utc = ZoneInfo("UTC")
    noon = datetime(2026, 6, 15, 12, tzinfo=utc)
    late = datetime(2026, 6, 15, 23, 59, tzinfo=utc)
    assert due_days(None, noon, 30) == []
    assert due_days(None, late, 30) == [date(2026, 6, 15)]
    assert due_days(date(2026, 6, 14), noon, 30) == []
    assert due_days(date(2026, 6, 14), late, 30) == [date(2026, 6, 15)]
    assert due_days(date(2026, 6, 15), late, 30) == []
    # Beat down for 40 days: only the retention window is written.
    caught = due_days(date(2026, 5, 1), noon, 30)
    assert caught[0] == date(2026, 5, 16) and caught[-1] == date(2026, 6, 14)


def at(hours: float) -> datetime:
    return DAY_START + timedelta(hours=hours)


def job(job_id: str, user: str | None, gpus: int = 1, **values: object) -> JobRow:
    return JobRow(id=job_id, user=user, gpus=gpus, **values)


def attempt(job_id: str, started: float, ended: float | None = None) -> AttemptRow:
    return AttemptRow(
        job_id=job_id, started_at=at(started), ended_at=None if ended is None else at(ended)
    )


@pytest.mark.timeout(10)
def test_an_attempt_counts_within_the_day_and_a_running_one_up_to_its_end_or_now() -> None:
    # Given an attempt over the whole day and both its ends, one from 16:00 still
    # running, one from 20:00 still running, and one whose end was never recorded
    # though its job ended at 05:00
    jobs = [
        job("across", "alice", gpus=2),
        job("running", "bob"),
        job("later", "bob"),
        job("unended", "carol", finished_at=at(5)),
    ]
    attempts = [
        attempt("across", -3, 27),
        attempt("running", 16),
        attempt("later", 20),
        attempt("unended", 4),
    ]

    # When the day's GPU-hours are figured once it is over
    usage = gpu_hours(jobs, attempts, DAY_START, DAY_END, now=at(30))

    # Then the first counts 24 h on 2 GPUs, the running ones up to the day's end,
    # the unended one up to its job's end; no job has a group
    assert [(u.user, u.gpu_hours, u.jobs) for u in usage.by_user] == [
        ("alice", 48.0, 1),
        ("bob", 12.0, 2),
        ("carol", 1.0, 1),
    ]
    assert usage.total == 61.0 and usage.by_group == []

    # When it is figured at 18:00, before the first had ended
    usage = gpu_hours(jobs[1:], attempts[1:], DAY_START, DAY_END, now=at(18))

    # Then a running attempt counts up to now, and one not started yet not at all
    assert [(u.user, u.gpu_hours, u.jobs) for u in usage.by_user] == [
        ("bob", 2.0, 1),
        ("carol", 1.0, 1),
    ]


@pytest.mark.timeout(10)
def test_a_gang_job_counts_its_gpus_on_every_node_and_groups_appear_once_used() -> None:
    # Given a 2-node gang job of 4 GPUs a node in a group, and a job of an unknown
    # submitter without one, of equal GPU-hours
    members = json.dumps([["n1", [0, 1, 2, 3]], ["n2", [4, 5, 6, 7]]])
    jobs = [job("gang", "dana", gpus=4, members=members, group_name="nlp"), job("old", None)]
    attempts = [attempt("gang", 1, 2), attempt("old", 1, 9)]

    # When the day's GPU-hours are figured
    usage = gpu_hours(jobs, attempts, DAY_START, DAY_END, now=at(30))

    # Then the gang job's hour counts 8 GPU-hours; ties go by name, the unknown last
    assert all_gpus(4, members) == 8 and all_gpus(4, None) == 4
    assert [(u.user, u.gpu_hours) for u in usage.by_user] == [("dana", 8.0), (None, 8.0)]
    assert [(g.group, g.gpu_hours, g.jobs) for g in usage.by_group] == [
        ("nlp", 8.0, 1),
        (None, 8.0, 1),
    ]
