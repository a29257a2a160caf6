"""The daily summary's headline figures count what its sections list: the key events
of the Key events section, and the jobs that waited, from the registry's jobs (those
the Experiments section counts), whatever the health samples saw of the queue."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert

from tests.integration.test_summary import add_attempt, registry_of
from ugro.health.samples import GpuSample, NodeSample, add_samples
from ugro.registry.models import EventRow
from ugro.registry.store import Registry
from ugro.settings import Settings
from ugro.summary.day import Day
from ugro.summary.gather import KEY_EVENT_KINDS, MAX_LISTED_EVENTS, build_summary, gather
from ugro.summary.render import render_markdown
from ugro.summary.resources import jobs_waiting

DAY = Day(date(2026, 3, 10), ZoneInfo("UTC"))


def at(hours: float, days: int = 0) -> datetime:
    """A moment of DAY (``days`` before or after it)."""
    return DAY.since + timedelta(days=days, hours=hours)


def add_job(
    registry: Registry, job_id: str, status: str, created_at: datetime, **values: Any
) -> None:
    row: dict[str, Any] = {
        "id": job_id,
        "name": job_id,
        "kind": "train",
        "status": status,
        "priority": 0,
        "gpus": 1,
        "attempt": 0,
        "max_retries": 1,
        "spec": json.dumps({"name": job_id, "command": ["true"]}),
        "created_at": created_at,
    }
    registry.create_job(**{**row, **values})


def add_events(registry: Registry, events: list[tuple[str, datetime, str | None]]) -> None:
    """Events as the parts that write them record them, each at its moment."""
    rows = [
        {"created_at": moment, "kind": kind, "job_id": job_id, "node": "testnode", "message": kind}
        for kind, moment, job_id in events
    ]
    with registry.engine.begin() as conn:
        conn.execute(insert(EventRow), rows)


def headline(page: str) -> str:
    return page.splitlines()[2]


def section(page: str, heading: str) -> list[str]:
    """The lines of one ``## heading`` section of the page."""
    lines = page.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in lines.splitlines() if line]


# Key events ------------------------------------------------------------------------

_ISSUE_DAY = {"job_cancelled": 7, "job_failed": 9, "requeued": 5}
_MORE_THAN_LISTED = {"stuck": MAX_LISTED_EVENTS + 5, "requeued": 3}


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "kinds", [_ISSUE_DAY, _MORE_THAN_LISTED], ids=["only-counted-kinds", "more-than-listed"]
)
def test_the_headline_counts_the_events_the_key_events_section_counts(
    settings: Settings, kinds: dict[str, int]
) -> None:
    # Given a day whose events are of kinds only counted (the day of the report), or
    # of a listed kind, more of them than the page lists
    registry = registry_of(settings)
    add_events(
        registry,
        [
            (kind, at(8, 0) + timedelta(seconds=n + 100 * i), f"job-{n}")
            for i, (kind, count) in enumerate(sorted(kinds.items()))
            for n in range(count)
        ],
    )

    # When the day is figured and rendered
    summary = build_summary(registry, settings, DAY)
    page = render_markdown(summary)

    # Then the headline's number of key events is the section's count of them, which
    # is every event of the day
    said = re.search(r"(\d+) key events", headline(page))
    assert said is not None, headline(page)
    [counts_line, *_] = section(page, "Key events")
    counted = {kind: int(n) for kind, n in re.findall(r"(\w+): (\d+)", counts_line)}
    assert counted == kinds
    assert int(said.group(1)) == sum(counted.values())
    assert summary.events.total == sum(kinds.values())  # the figure the headline shows
    listed = sum(n for kind, n in kinds.items() if kind in KEY_EVENT_KINDS)
    assert len(summary.events.key) + summary.events.key_not_listed == listed
    registry.close()


# Jobs that waited ------------------------------------------------------------------


def a_day_of_waits(registry: Registry) -> None:
    """DAY on 4 GPUs: a 2-GPU job queued since the evening before and all day (three
    1-GPU jobs hold three GPUs); a job that waited in the morning, failed, and waited
    again for its retry; one cancelled in the queue; one that failed days ago and
    was retried by hand in the afternoon. The health sweep sampled the queue only
    from 07:00 to 07:02 (then beat was down): one job waited then."""
    for n, ended in ((1, None), (2, at(9)), (3, at(11))):
        job_id = f"small-{n}"
        add_job(
            registry,
            job_id,
            "running" if ended is None else "finished",
            at(19, days=-1),
            attempt=1,
            placed_at=at(19, days=-1),
            started_at=at(19.001, days=-1),
            finished_at=ended,
        )
        add_attempt(registry, job_id, 1, at(19.001, days=-1), ended, None if ended else "ok")
    add_job(registry, "big", "queued", at(20, days=-1), gpus=2)
    add_job(
        registry,
        "retried",
        "finished",
        at(8),
        attempt=2,
        placed_at=at(12),
        started_at=at(12.001),
        finished_at=at(13),
    )
    add_attempt(registry, "retried", 1, at(9.001), at(10), "error")
    add_attempt(registry, "retried", 2, at(12.001), at(13), "ok")
    add_job(registry, "dropped", "cancelled", at(10.5), finished_at=at(11.5))
    add_job(registry, "by-hand", "queued", at(0, days=-9), attempt=1, placed_at=at(1, days=-9))
    add_attempt(registry, "by-hand", 1, at(1.001, days=-9), at(2, days=-9), "error")
    add_events(
        registry,
        [
            ("requeued", at(10) + timedelta(seconds=1), "retried"),
            ("job_cancelled", at(11.5), "dropped"),
            ("requeued", at(14), "by-hand"),
        ],
    )
    busy = (GpuSample(index=0, busy=True), GpuSample(index=1, busy=True))
    idle = (GpuSample(index=2, busy=True), GpuSample(index=3))
    add_samples(
        registry,
        [
            NodeSample(
                node="testnode",
                at=at(7) + timedelta(minutes=minute),
                score=100,
                level="INFO",
                breaker="closed",
                reachable=True,
                pending=1,  # as the sweep saw the queue: "big"
                gpus=busy + idle,
            )
            for minute in range(3)
        ],
    )


@pytest.mark.timeout(30)
def test_at_most_n_jobs_waited_counts_the_jobs_queued_during_the_day(settings: Settings) -> None:
    # Given a day when a 2-GPU job sat queued all day, others for part of it, and
    # the health sweep saw the queue for three minutes only
    registry = registry_of(settings)
    a_day_of_waits(registry)

    # When the day is figured and rendered
    summary = build_summary(registry, settings, DAY)
    page = render_markdown(summary)

    # Then the most jobs that waited at once is three (10:30-11:30: big, retried and
    # dropped), among those the Experiments section counts
    assert summary.resources.max_pending == 3
    assert "At most 3 jobs waited at once." in section(page, "Resources")
    assert summary.experiments.by_status["queued"] == 2  # big and by-hand, at the day's end
    # The sampled minutes had one idle GPU while big waited: 60 + 60 + 120 s.
    assert summary.resources.idle_gpu_hours_while_waiting == round(240 / 3600, 3)
    registry.close()


@pytest.mark.timeout(30)
def test_each_job_waits_from_its_submission_or_requeue_to_its_placement(
    settings: Settings,
) -> None:
    # Given the same day, read from the registry as the summary reads it
    registry = registry_of(settings)
    a_day_of_waits(registry)
    inputs = gather(registry, settings, DAY, datetime.now(UTC))

    # When the waits are counted over the day
    steps = jobs_waiting(inputs.jobs, inputs.attempts, inputs.events, DAY.since, DAY.until)

    # Then each job counts from its submission, or requeue, to its placement (or the
    # day's end), and no longer
    assert [(moment.astimezone(UTC).strftime("%H:%M"), count) for moment, count in steps] == [
        ("00:00", 1),  # big, queued since the day before
        ("08:00", 2),  # retried, submitted
        ("09:00", 1),  # retried, placed
        ("10:00", 2),  # retried, requeued after its first attempt
        ("10:30", 3),  # dropped, submitted
        ("11:30", 2),  # dropped, cancelled in the queue
        ("12:00", 1),  # retried, placed again
        ("14:00", 2),  # by-hand, retried by hand (its attempt ended 9 days before)
        ("00:00", 0),  # the day's end
    ]
    registry.close()
