"""The daily summary: figures checked against the registry for a day of real runs,
health samples, GPU-hours by user and group, the timezone boundary, delivery with a
failing receiver, once per day under two concurrent writers, and catch-up of missed
days."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema
import pytest
from sqlalchemy import insert

from tests.conftest import (
    ROOT,
    env_for,
    make_settings,
    running_stack,
    ugro,
    wait_for_job,
    wait_until,
)
from tests.webhook import Webhook
from ugro import Client, JobSpec
from ugro.health.samples import GpuSample, NodeSample, add_sample, samples
from ugro.registry.models import EventRow, SummaryRow
from ugro.registry.store import Registry
from ugro.settings import Settings
from ugro.summary.daily import SummaryFiles, run_daily, summary_rows, write_summary
from ugro.summary.day import Day
from ugro.summary.gather import build_summary
from ugro.summary.model import metrics_schema

PY = sys.executable
TITLE = "ugro daily summary"


def validate(data: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(
        metrics_schema(), format_checker=jsonschema.FormatChecker()
    ).validate(data)


@pytest.fixture
def receiver() -> Iterator[Webhook]:
    made = Webhook()
    yield made
    made.close()


def registry_of(settings: Settings) -> Registry:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return Registry(settings.effective_database_url)


def add_job(registry: Registry, job_id: str, status: str, **values: Any) -> None:
    now = datetime.now(UTC)
    row: dict[str, Any] = {
        "id": job_id,
        "name": job_id,
        "kind": "train",
        "status": status,
        "priority": 0,
        "gpus": 1,
        "attempt": 1,
        "max_retries": 0,
        "spec": json.dumps({"name": job_id, "command": ["true"]}),
        "created_at": now - timedelta(days=2),
    }
    row.update(values)
    registry.create_job(**row)


def add_attempt(
    registry: Registry,
    job_id: str,
    number: int,
    started_at: datetime,
    ended_at: datetime | None = None,
    exit_reason: str | None = None,
) -> None:
    registry.start_attempt(
        job_id=job_id,
        number=number,
        node="testnode",
        host="testhost",
        gpu_indices="[0]",
        pid=None,
        started_at=started_at,
        ended_at=ended_at,
        exit_reason=exit_reason,
    )


def mark_written(registry: Registry, day: date, delivered: bool = True) -> None:
    now = datetime.now(UTC)
    with registry.engine.begin() as conn:
        conn.execute(
            insert(SummaryRow).values(
                date=day.isoformat(),
                claimed_at=now,
                claimed_by="test",
                written_at=now,
                delivered_at=now if delivered else None,
            )
        )


# A day of real runs ----------------------------------------------------------------


@pytest.mark.timeout(150)
def test_a_day_of_real_runs_is_summarised_caught_up_and_delivered_after_a_failure(
    tmp_path: Path, database_url: str
) -> None:
    # Given a receiver that refuses the first summary, a summary written three days
    # ago (so beat's start has two days to catch up), and real runs today.
    today = datetime.now(UTC).date()
    missed = [today - timedelta(days=2), today - timedelta(days=1)]
    settings = make_settings(
        tmp_path / "data",
        database_url,
        stuck_after=2.0,
        progress_interval=1.0,
        health_collect_interval=0.3,
        health_min_interval=0.3,
        breaker_open_seconds=1.0,
    )
    missed_files = [f for d in missed for f in (SummaryFiles.of(settings, d).markdown,)]
    receiver = Webhook(look=lambda: all(path.exists() for path in missed_files))
    receiver.refuse(TITLE, 500)
    settings = settings.model_copy(update={"notify_urls": receiver.url})
    registry = registry_of(settings)
    mark_written(registry, today - timedelta(days=3))
    train = [PY, str(ROOT / "examples" / "train.py")]
    try:
        with running_stack(settings), Client(settings) as client:
            trainer = client.submit(
                JobSpec(
                    name="trainer",
                    epochs=3,
                    command=[*train, "--epochs", "3", "--epoch-seconds", "0.3"],
                )
            )
            oom = client.submit(
                JobSpec(
                    name="oom",
                    command=[
                        PY,
                        "-c",
                        "import sys; print('RuntimeError: CUDA out of memory. Tried to allocate"
                        " 2.00 GiB', flush=True); sys.exit(1)",
                    ],
                )
            )
            quiet = client.submit(
                JobSpec(
                    name="quiet",
                    command=[
                        PY,
                        "-c",
                        "print('started', flush=True); import time; time.sleep(600)",
                    ],
                )
            )
            long = client.submit(
                JobSpec(
                    name="long",
                    epochs=100,
                    command=[*train, "--epochs", "100", "--epoch-seconds", "0.3"],
                )
            )
            # A GPU of the node fails: the real sweep opens its breaker; it recovers.
            control = settings.data_dir / "fake-gpus.json"
            control.write_text(json.dumps({"3": {"fail": "fell off the bus"}}))
            wait_until(lambda: _node_events(registry, "breaker_open"), 30, "breaker open")
            control.unlink()
            wait_until(lambda: _node_events(registry, "breaker_closed"), 30, "breaker closed")

            # Beat's start caught up the two missed days; the first delivery failed
            # (the files were there), Celery's retry delivered them.
            receiver.wait(lambda: len(receiver.delivered(TITLE)) >= 1, 60, "the retried delivery")
            first = receiver.titled(TITLE)[0]
            assert first.status == 500 and first.seen, "files before delivery"
            [sent] = receiver.delivered(TITLE)[:1]
            assert missed[0].isoformat() in sent["title"] or missed[1].isoformat() in sent["title"]
            assert any(a["filename"].endswith("_metrics.json") for a in sent["attachments"])

            for job_id in (trainer.id, oom.id):
                wait_for_job(client, job_id, lambda j: j.done, 60)
            wait_for_job(client, quiet.id, lambda j: j.done, 60)
            wait_until(
                lambda: (
                    json.loads(registry.get_job(long.id).progress or "{}").get(
                        "completed_epochs", 0
                    )
                    >= 3
                ),
                60,
                "the long run's progress",
            )
            receiver.wait(lambda: len(receiver.delivered(TITLE)) >= 2, 30, "both missed days sent")
    finally:
        receiver.close()

    # Then: both missed days written once and delivered, the files stayed.
    rows = {row.date: row for row in summary_rows(registry)}
    for day in missed:
        assert SummaryFiles.of(settings, day).markdown.exists()
        assert SummaryFiles.of(settings, day).metrics.exists()
        assert rows[day.isoformat()].delivered_at is not None
    assert sorted(b["title"] for b in receiver.delivered(TITLE)) == [f"{TITLE} {d}" for d in missed]

    # When today is rendered on demand (the stack is down: nothing moves).
    result = ugro(settings, "summary", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    validate(data)
    files = SummaryFiles.of(settings, today)
    assert json.loads(files.metrics.read_text()) == data
    page = files.markdown.read_text()

    # Then every section holds what the registry holds.
    jobs = {job.id: job for job in registry.list_jobs()}
    exp = data["experiments"]
    assert exp["total"] == len(jobs) == 4
    assert exp["by_status"] == dict(Counter(job.status for job in jobs.values()))
    assert {line["id"] for line in exp["started"]} == set(jobs)
    assert [line["id"] for line in exp["finished"]] == [trainer.id]
    failed = {line["id"]: line for line in exp["failed"]}
    assert set(failed) == {oom.id, quiet.id}
    assert failed[oom.id]["exit_reason"] == "oom"
    assert "CUDA out of memory" in failed[oom.id]["error"]
    assert failed[quiet.id]["exit_reason"] == "stuck"
    assert failed[quiet.id]["error"] == jobs[quiet.id].error

    events = data["events"]
    day_events = registry.events_between(
        datetime.fromisoformat(data["since"]), datetime.fromisoformat(data["until"])
    )
    assert events["counts"] == dict(Counter(e.kind for e in day_events))
    assert events["stuck_runs_stopped"] == events["counts"]["stuck"] >= 1
    kinds = {(e["kind"], e["node"], e["job_id"]) for e in events["key"]}
    assert ("breaker_open", "testnode", None) in kinds
    assert ("breaker_closed", "testnode", None) in kinds
    assert ("stuck", "testnode", quiet.id) in kinds
    assert [(o["job_id"], o["attempt"]) for o in events["ooms"]] == [(oom.id, 1)]

    progress = data["progress"]
    [run] = progress["runs"]
    recorded = json.loads(jobs[long.id].progress or "{}")
    assert run["id"] == long.id and run["status"] == jobs[long.id].status
    assert run["completed_epochs"] == recorded["completed_epochs"] >= 3
    assert run["total_epochs"] == 100 and run["eta_seconds"] == recorded["eta_seconds"]
    assert progress["epochs_done"] == recorded["completed_epochs"]
    assert progress["epochs_planned"] == 100 and progress["above_90"] == []

    day = Day(today, ZoneInfo("UTC"))
    assert data["resources"]["samples"] == len(samples(registry, day.since, day.until)) > 0

    for heading in ("## Experiments", "## Resources", "## Key events", "## Progress"):
        assert heading in page
    assert oom.id in page and "CUDA out of memory" in page and "fell off the bus" in page
    registry.close()


def _node_events(registry: Registry, kind: str) -> list[str]:
    return [e.message for e in registry.events() if e.kind == kind and e.node == "testnode"]


# Figures from health samples -------------------------------------------------------


def gpu(index: int, util: float, busy: bool) -> GpuSample:
    return GpuSample(
        index=index,
        utilization=util,
        memory_used_mb=1000,
        memory_total_mb=16000,
        temperature_c=50,
        power_w=100,
        busy=busy,
    )


@pytest.mark.timeout(30)
def test_resources_come_from_health_samples_time_weighted(settings: Settings) -> None:
    # Given two nodes sampled as the sweep does: node a busy for an hour at 5 s
    # intervals would swamp a plain mean, so it is sampled sparsely here and
    # weighted by time; node b idle while two jobs wait, its breaker opened.
    registry = registry_of(settings)
    day = Day(date(2026, 3, 10), ZoneInfo("Europe/Berlin"))
    start = day.since + timedelta(hours=10)
    for job_id in ("waiting-1", "waiting-2"):  # queued a minute before, to the day's end
        add_job(registry, job_id, "queued", attempt=0, created_at=start - timedelta(minutes=1))
    for minute, (util, cpu) in enumerate([(20.0, 10.0), (80.0, 50.0), (50.0, 30.0)]):
        add_sample(registry, NodeSample(
            node="a", at=start + timedelta(minutes=minute), score=100, level="INFO",
            breaker="closed", reachable=True, cpu_percent=cpu, pending=0,
            gpus=(gpu(0, util, True), gpu(1, util, True)),
        ))  # fmt: skip
    for minute in range(3):
        add_sample(registry, NodeSample(
            node="b", at=start + timedelta(minutes=minute, seconds=30), score=40,
            level="CRITICAL", breaker="open", reachable=True, cpu_percent=5.0, pending=2,
            gpus=(gpu(0, 0.0, False),),
        ))  # fmt: skip
    with registry.engine.begin() as conn:  # as the sweep records it, at that moment
        conn.execute(
            insert(EventRow).values(
                created_at=start + timedelta(seconds=20),
                kind="breaker_open",
                node="b",
                message="b: 3 failed checks in a row",
            )
        )

    summary = build_summary(registry, settings, day)
    data = summary.to_json()
    validate(data)
    nodes = {n.node: n for n in summary.resources.nodes}
    # Each sample stands for the minute to the next (the last: GAP_SECONDS, 120 s).
    assert nodes["a"].gpu_util_avg == round((20 * 60 + 80 * 60 + 50 * 120) / 240, 1)
    assert nodes["a"].gpu_util_peak is not None and nodes["a"].gpu_util_peak.value == 80.0
    assert nodes["a"].gpu_util_peak.at == day.local(start + timedelta(minutes=1))
    assert nodes["a"].cpu_peak is not None and nodes["a"].cpu_peak.value == 50.0
    assert nodes["a"].idle_gpus == [] and nodes["b"].idle_gpus == [0]
    # b: one idle GPU while 2 jobs waited, 60 + 60 + 120 s.
    assert nodes["b"].idle_gpu_hours_while_waiting == round(240 / 3600, 3)
    assert nodes["b"].breaker_open_samples == 3
    assert summary.resources.max_pending == 2
    assert summary.resources.gpu_util_peak is not None
    assert summary.events.key[0].kind == "breaker_open" and summary.events.key[0].node == "b"

    result = ugro(settings, "summary", "--date", "2026-03-10",
                  env={**env_for(settings), "UGRO_TIMEZONE": "Europe/Berlin"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    files = SummaryFiles.of(settings, day.date)
    assert files.chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"]({files.chart.name})" in result.stdout
    assert "| a | 2 |" in result.stdout and "80.0 % at 10:01" in result.stdout
    registry.close()


# GPU-hours by user and group -------------------------------------------------------


def rows_under(page: str, heading: str) -> list[str]:
    """The rows of the table under ``### heading`` (without its header and rule)."""
    table = page.split(f"### {heading}\n\n", 1)[1].split("\n\n", 1)[0]
    return table.splitlines()[2:]


@pytest.mark.timeout(30)
def test_gpu_hours_are_counted_by_user_and_group_within_the_day(settings: Settings) -> None:
    # Given a day (in Berlin) when alice's 2-GPU job ran from the evening before
    # until 02:00 and her 1-GPU job ran twice (a retry), and bob's gang job held 4
    # GPUs on each of 2 nodes for 1.5 h while his other job ran from 23:00 on; carol's
    # job only waited
    berlin = ZoneInfo("Europe/Berlin")
    settings = settings.model_copy(update={"timezone": berlin.key})
    registry = registry_of(settings)
    day = Day(date(2026, 3, 10), berlin)

    def at(hours: float) -> datetime:
        return day.since + timedelta(hours=hours)

    add_job(registry, "a-long", "finished", created_at=at(-4), gpus=2, user="alice",
            group_name="vision", started_at=at(-2), finished_at=at(2))  # fmt: skip
    add_attempt(registry, "a-long", 1, at(-2), at(2), "ok")
    add_job(registry, "a-retry", "finished", created_at=at(8), attempt=2, user="alice",
            started_at=at(11), finished_at=at(12.5))  # fmt: skip
    add_attempt(registry, "a-retry", 1, at(9), at(10), "error")
    add_attempt(registry, "a-retry", 2, at(11), at(12.5), "ok")
    gang = json.dumps([["n1", [0, 1, 2, 3]], ["n2", [0, 1, 2, 3]]])
    add_job(registry, "b-gang", "finished", created_at=at(13), gpus=4, members=gang,
            user="bob", group_name="nlp", started_at=at(14), finished_at=at(15.5))  # fmt: skip
    add_attempt(registry, "b-gang", 1, at(14), at(15.5), "ok")
    add_job(registry, "b-running", "running", created_at=at(22), user="bob", started_at=at(23))
    add_attempt(registry, "b-running", 1, at(23))
    add_job(registry, "c-waiting", "queued", created_at=at(20), attempt=0, user="carol")

    # When the day is figured, written and rendered
    summary, page, files = write_summary(registry, settings, day)

    # Then each user's GPU-hours are their attempts' GPUs times their hours within
    # the day: alice 2 x 2 h + 1 h + 1.5 h, bob 8 x 1.5 h + 1 h (to the day's end)
    data = json.loads(files.metrics.read_text())
    validate(data)
    assert data["gpu_hours"] == {
        "total": 19.5,
        "by_user": [
            {"user": "bob", "gpu_hours": 13.0, "jobs": 2},
            {"user": "alice", "gpu_hours": 6.5, "jobs": 2},
        ],
        "by_group": [
            {"group": "nlp", "gpu_hours": 12.0, "jobs": 1},
            {"group": "vision", "gpu_hours": 4.0, "jobs": 1},
            {"group": None, "gpu_hours": 3.5, "jobs": 2},
        ],
    }
    assert summary.gpu_hours.total == sum(u.gpu_hours for u in summary.gpu_hours.by_user)
    assert rows_under(page, "GPU-hours by user") == [
        "| bob | 13.00 | 2 |",
        "| alice | 6.50 | 2 |",
        "| **all** | 19.50 | 4 |",
    ]
    assert rows_under(page, "GPU-hours by group") == [
        "| nlp | 12.00 | 1 |",
        "| vision | 4.00 | 1 |",
        "| - | 3.50 | 2 |",
        "| **all** | 19.50 | 4 |",
    ]
    registry.close()


@pytest.mark.timeout(30)
def test_outdated_runs_are_counted_and_those_that_became_so_today_listed(
    settings: Settings,
) -> None:
    # Given (with the 30-day window) a job that finished 60 days before the day, one
    # whose 30 days ran out during it, a recent one and an old failure
    assert settings.outdated_after == 30 * 86400
    registry = registry_of(settings)
    day = Day(date(2026, 3, 10), ZoneInfo("UTC"))
    window = timedelta(days=30)
    ended = {
        "ancient": day.since - 2 * window,
        "turned": day.since - window + timedelta(hours=6),
        "recent": day.since - timedelta(days=1),
    }
    for job_id, finished in ended.items():
        add_job(registry, job_id, "finished", created_at=finished - timedelta(hours=1),
                started_at=finished - timedelta(hours=1), finished_at=finished)  # fmt: skip
    add_job(registry, "old-failure", "failed", created_at=day.since - 3 * window,
            started_at=day.since - 3 * window, finished_at=day.since - 2 * window)  # fmt: skip

    # When the day is figured, written and rendered
    summary, page, files = write_summary(registry, settings, day)

    # Then every outdated run is counted, and the one that became so today listed
    data = json.loads(files.metrics.read_text())
    validate(data)
    assert data["events"]["outdated_total"] == summary.events.outdated_total == 2
    assert [run["job_id"] for run in data["events"]["outdated"]] == ["turned"]
    assert "Outdated runs: 2 (1 became outdated today)." in page
    assert rows_under(page, "Became outdated (1)")[0].startswith("| turned |")
    registry.close()


# The empty day, bad input, the timezone boundary -----------------------------------


@pytest.mark.timeout(30)
def test_an_empty_day_renders_a_short_page_and_a_bad_date_is_refused(
    settings: Settings,
) -> None:
    result = ugro(settings, "summary", "--date", "2026-01-05")
    assert result.returncode == 0, result.stderr
    assert "A quiet day" in result.stdout and len(result.stdout.splitlines()) < 8
    data = json.loads(SummaryFiles.of(settings, date(2026, 1, 5)).metrics.read_text())
    validate(data)
    assert data["experiments"]["total"] == 0 and data["resources"]["gpu_util_avg"] is None
    assert not SummaryFiles.of(settings, date(2026, 1, 5)).chart.exists()

    bad = ugro(settings, "summary", "--date", "2026-02-30")
    assert bad.returncode == 2 and "'2026-02-30' is not a date" in bad.stderr
    tz = ugro(settings, "summary", env={**env_for(settings), "UGRO_TIMEZONE": "Mars/Base"})
    assert tz.returncode == 2 and "UGRO_TIMEZONE" in tz.stderr


@pytest.mark.timeout(30)
def test_a_job_lands_on_its_local_day_across_midnight(settings: Settings) -> None:
    # Given two jobs finishing 23:58 and 00:01 in New York (04:58 and 05:01 UTC).
    new_york = ZoneInfo("America/New_York")
    settings = settings.model_copy(update={"timezone": "America/New_York"})
    registry = registry_of(settings)
    late = datetime(2026, 11, 20, 23, 58, tzinfo=new_york)
    early = datetime(2026, 11, 21, 0, 1, tzinfo=new_york)
    for job_id, end in (("late", late), ("early", early)):
        add_job(
            registry,
            job_id,
            "finished",
            created_at=end - timedelta(hours=1),
            started_at=end - timedelta(minutes=30),
            finished_at=end.astimezone(UTC),
        )

    first = build_summary(registry, settings, Day(date(2026, 11, 20), new_york))
    second = build_summary(registry, settings, Day(date(2026, 11, 21), new_york))
    assert [line.id for line in first.experiments.finished] == ["late"]
    assert first.experiments.finished[0].at.strftime("%H:%M %z") == "23:58 -0500"
    assert [line.id for line in second.experiments.finished] == ["early"]
    # "early" was still running when the 20th ended.
    assert first.experiments.by_status == {"finished": 1, "running": 1}
    registry.close()


# Once per day, catch-up, retention -------------------------------------------------

_DAILY = """
import json, sys, time
from datetime import datetime
from ugro.registry.store import Registry
from ugro.settings import Settings
from ugro.summary.daily import run_daily
settings = Settings()
registry = Registry(settings.effective_database_url)
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.005)
print(json.dumps(vars(run_daily(registry, settings, datetime.fromisoformat(sys.argv[1])))))
"""


@pytest.mark.timeout(60)
def test_two_concurrent_daily_runs_write_and_send_the_day_once(
    settings: Settings, receiver: Webhook
) -> None:
    settings = settings.model_copy(update={"notify_urls": receiver.url, "timezone": "Asia/Tokyo"})
    registry = registry_of(settings)
    day = datetime.now(ZoneInfo("Asia/Tokyo")).date()
    mark_written(registry, day - timedelta(days=1))
    at_2359 = datetime.combine(day, datetime.min.time(), ZoneInfo("Asia/Tokyo")).replace(
        hour=23, minute=59, second=5
    )
    start = time.time() + 1.5  # both processes are up and waiting by then
    procs = [
        subprocess.Popen(
            [PY, "-c", _DAILY, at_2359.isoformat(), str(start)],
            env=env_for(settings),
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    reports = [json.loads(proc.communicate(timeout=40)[0]) for proc in procs]
    assert sorted(r["written"] for r in reports) == [[], [day.isoformat()]]
    # The other found the row taken, or (a moment later) the day no longer due.
    assert all(r["skipped"] in ([], [day.isoformat()]) for r in reports)
    receiver.wait(lambda: len(receiver.titled(TITLE)) >= 1, 10, "the delivery")
    assert [b["title"] for b in receiver.delivered(TITLE)] == [f"{TITLE} {day}"]
    body = receiver.delivered(TITLE)[0]
    metrics = next(a for a in body["attachments"] if a["filename"].endswith("_metrics.json"))
    validate(json.loads(base64.b64decode(metrics["base64"])))
    registry.close()


@pytest.mark.timeout(30)
def test_missed_days_are_caught_up_and_old_ones_pruned(settings: Settings) -> None:
    registry = registry_of(settings)
    berlin = ZoneInfo("Europe/Berlin")
    now = datetime(2026, 6, 15, 10, 0, tzinfo=berlin)
    mark_written(registry, date(2026, 6, 11))
    mark_written(registry, date(2026, 5, 1))
    old = SummaryFiles.of(settings, date(2026, 5, 1))
    old.markdown.parent.mkdir(parents=True)
    old.markdown.write_text("old")
    settings = settings.model_copy(update={"timezone": "Europe/Berlin"})

    report = run_daily(registry, settings, now.astimezone(UTC))
    assert report.written == ["2026-06-12", "2026-06-13", "2026-06-14"]
    assert report.pruned == 1 and not old.markdown.exists()
    assert [r.date for r in summary_rows(registry)] == [
        "2026-06-11", "2026-06-12", "2026-06-13", "2026-06-14"
    ]  # fmt: skip
    # A second run the same morning has nothing to do; 23:59 writes the day itself.
    assert run_daily(registry, settings, now.astimezone(UTC)).written == []
    evening = now.replace(hour=23, minute=59)
    assert run_daily(registry, settings, evening.astimezone(UTC)).written == ["2026-06-15"]
    assert SummaryFiles.of(settings, date(2026, 6, 15)).metrics.exists()
    registry.close()


@pytest.mark.timeout(30)
def test_a_daily_run_given_a_local_time_records_its_claims_in_utc(settings: Settings) -> None:
    # Given a zone 14 hours ahead of UTC, and a run told the time there (on SQLite a
    # datetime is stored by its wall clock: read back as UTC it would be 14 h off)
    kiritimati = ZoneInfo("Pacific/Kiritimati")
    settings = settings.model_copy(update={"timezone": kiritimati.key})
    registry = registry_of(settings)
    now = datetime.now(kiritimati).replace(hour=23, minute=59, second=5, microsecond=0)
    mark_written(registry, now.date() - timedelta(days=1))
    # When the day is written
    assert run_daily(registry, settings, now).written == [now.date().isoformat()]
    # Then its claim is the moment given
    claimed = summary_rows(registry)[-1].claimed_at
    assert claimed.replace(tzinfo=claimed.tzinfo or UTC) == now
    registry.close()
