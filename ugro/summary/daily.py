"""The daily summary's production: each day written once, missed days caught up,
old ones pruned, new ones delivered.

Once per day, whoever runs it: a row per date in ``ugro_summaries`` (the date is
its primary key) is claimed by inserting it before anything is written; a second
task that finds the row taken writes nothing. A claim whose writer died before it
finished is taken over after ``STALE_CLAIM``. Delivery is claimed the same way, so
two tasks never both send a day.

Which days are due: every day after the newest written one, up to today once it is
(nearly) 23:59 in ``UGRO_TIMEZONE``, else up to yesterday, and never older than
the retention. So the 23:59 run writes today, and a run at beat's start after a
down time writes the days it missed. With no summary ever written, only the 23:59
run writes (a fresh install is not given pages for days before it existed).
"""

from __future__ import annotations

import logging
import os
import re
import socket
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from ugro.health.samples import samples
from ugro.jobs.paths import write_bytes_atomic, write_json_atomic
from ugro.notify import notify
from ugro.registry.models import SummaryRow
from ugro.registry.store import Registry
from ugro.settings import Settings
from ugro.summary.day import Day, timezone_of, today
from ugro.summary.gather import build_summary
from ugro.summary.model import DaySummary
from ugro.summary.render import render_chart, render_markdown

log = logging.getLogger(__name__)

#: When the day's summary is written (beat's crontab uses the same).
SCHEDULED_AT = time(23, 59)
#: A run this early still counts as the 23:59 one: beat's clock and the worker's
#: may differ by a little, and a run a second early must not skip the day.
_EARLY = timedelta(minutes=5)
#: A claim (to write or to deliver) older than this, unfinished, is taken over.
STALE_CLAIM = timedelta(minutes=10)
#: Only summaries written this recently are delivered: configuring a URL later
#: does not send a month of old pages.
_DELIVER_WITHIN = timedelta(days=1)
_DATED = re.compile(r"^(\d{4}-\d{2}-\d{2})_")


@dataclass(frozen=True)
class SummaryFiles:
    """The files of one day's summary in ``summaries/``."""

    markdown: Path
    metrics: Path
    chart: Path

    @classmethod
    def of(cls, settings: Settings, day: date) -> SummaryFiles:
        stem = settings.summaries_dir / day.isoformat()
        return cls(
            markdown=stem.with_name(f"{day.isoformat()}_summary.md"),
            metrics=stem.with_name(f"{day.isoformat()}_metrics.json"),
            chart=stem.with_name(f"{day.isoformat()}_gpu.png"),
        )

    def existing(self) -> list[Path]:
        return [path for path in (self.markdown, self.metrics, self.chart) if path.exists()]


def write_summary(
    registry: Registry, settings: Settings, day: Day, now: datetime | None = None
) -> tuple[DaySummary, str, SummaryFiles]:
    """Figure one day and write its Markdown, JSON and chart (each atomically).

    Returns the figures, the Markdown and the files. Writes whatever the registry
    says, every time: the once-per-day rule is ``run_daily``'s.
    """
    summary = build_summary(registry, settings, day, now)
    files = SummaryFiles.of(settings, day.date)
    files.markdown.parent.mkdir(parents=True, exist_ok=True)
    drawn = render_chart(samples(registry, day.since, day.until), summary, files.chart)
    if not drawn:
        files.chart.unlink(missing_ok=True)
    markdown = render_markdown(summary, files.chart.name if drawn else None)
    write_json_atomic(files.metrics, summary.to_json())
    write_bytes_atomic(files.markdown, markdown.encode("utf-8"))
    return summary, markdown, files


def due_days(last_written: date | None, now_local: datetime, retention_days: int) -> list[date]:
    """The days a daily run should write, oldest first. Pure."""
    current = now_local.date()
    ready = (now_local + _EARLY).time() >= SCHEDULED_AT or (now_local + _EARLY).date() > current
    end = current if ready else current - timedelta(days=1)
    if last_written is None:
        return [current] if ready else []
    start = max(last_written + timedelta(days=1), current - timedelta(days=retention_days))
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]


# The summaries table ---------------------------------------------------------------


def _who() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def last_written(registry: Registry) -> date | None:
    """The newest day whose summary was claimed (written, or being written)."""
    with registry.engine.connect() as conn:
        newest = conn.execute(select(func.max(SummaryRow.date))).scalar()
    return date.fromisoformat(newest) if newest else None


def claim_day(registry: Registry, day: date, now: datetime) -> bool:
    """Take the right to write ``day``'s summary; False when another has it."""
    try:
        with registry.engine.begin() as conn:
            conn.execute(
                insert(SummaryRow).values(date=day.isoformat(), claimed_at=now, claimed_by=_who())
            )
        return True
    except IntegrityError:
        pass
    with registry.engine.begin() as conn:  # a writer that died mid-way: take it over
        taken = conn.execute(
            update(SummaryRow)
            .where(
                SummaryRow.date == day.isoformat(),
                SummaryRow.written_at.is_(None),
                SummaryRow.claimed_at < now - STALE_CLAIM,
            )
            .values(claimed_at=now, claimed_by=_who())
        )
    return bool(taken.rowcount == 1)


def _set(registry: Registry, day: date, **values: object) -> None:
    with registry.engine.begin() as conn:
        conn.execute(update(SummaryRow).where(SummaryRow.date == day.isoformat()).values(**values))


def summary_rows(registry: Registry) -> list[SummaryRow]:
    with registry.engine.connect() as conn:
        rows = conn.execute(select(SummaryRow.__table__).order_by(SummaryRow.date))
        return [SummaryRow(**dict(row._mapping)) for row in rows]


# Delivery --------------------------------------------------------------------------


def deliver_pending(
    registry: Registry, settings: Settings, now: datetime
) -> tuple[list[str], bool]:
    """Send each recently written, undelivered summary to the notification URLs.

    Returns (the dates delivered, whether everything pending went out). A day that
    failed is left undelivered for the next try; its files stay as they are.
    """
    if not settings.notify_url_list:
        return [], True
    with registry.engine.connect() as conn:
        pending = (
            conn.execute(
                select(SummaryRow.date)
                .where(
                    SummaryRow.written_at.is_not(None),
                    SummaryRow.written_at >= now - _DELIVER_WITHIN,
                    SummaryRow.delivered_at.is_(None),
                )
                .order_by(SummaryRow.date)
            )
            .scalars()
            .all()
        )
    delivered: list[str] = []
    complete = True
    for text in pending:
        with registry.engine.begin() as conn:
            claimed = conn.execute(
                update(SummaryRow)
                .where(
                    SummaryRow.date == text,
                    SummaryRow.delivered_at.is_(None),
                    (SummaryRow.delivery_claimed_at.is_(None))
                    | (SummaryRow.delivery_claimed_at < now - STALE_CLAIM),
                )
                .values(delivery_claimed_at=now)
            ).rowcount
        if claimed != 1:
            continue  # another task is sending it
        day = date.fromisoformat(text)
        if send_summary(settings, day):
            _set(registry, day, delivered_at=datetime.now(UTC))
            delivered.append(text)
        else:
            _set(registry, day, delivery_claimed_at=None)
            complete = False
    return delivered, complete


def send_summary(settings: Settings, day: date) -> bool:
    """Send one day's written summary: the page as the body, chart and JSON attached."""
    files = SummaryFiles.of(settings, day)
    try:
        body = files.markdown.read_text(encoding="utf-8")
    except OSError as exc:
        log.error("the summary of %s cannot be sent: %s", day, exc)
        return False
    title = f"ugro daily summary {day.isoformat()}"
    return notify(settings, title, body, [files.chart, files.metrics])


# Retention -------------------------------------------------------------------------


def prune(registry: Registry, settings: Settings, current: date) -> list[Path]:
    """Delete summaries (files and rows) of days before the retention window."""
    cutoff = current - timedelta(days=settings.summary_retention_days)
    removed = []
    if settings.summaries_dir.is_dir():
        for path in settings.summaries_dir.iterdir():
            match = _DATED.match(path.name)
            if match is None:
                continue
            try:
                day = date.fromisoformat(match.group(1))
            except ValueError:
                continue
            if day < cutoff:
                path.unlink(missing_ok=True)
                removed.append(path)
    with registry.engine.begin() as conn:
        conn.execute(delete(SummaryRow).where(SummaryRow.date < cutoff.isoformat()))
    return sorted(removed)


# The daily task's work -------------------------------------------------------------


@dataclass
class DailyReport:
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # claimed by another task
    delivered: list[str] = field(default_factory=list)
    delivery_failed: bool = False
    pruned: int = 0


def run_daily(registry: Registry, settings: Settings, now: datetime | None = None) -> DailyReport:
    """Write every due day once, prune, then deliver what is pending."""
    # In UTC, as every datetime the registry stores: SQLite keeps a datetime's
    # wall-clock fields, so a claim or a comparison made with the local time of
    # a zone ahead of UTC would be off by its offset there.
    now = (now or datetime.now(UTC)).astimezone(UTC)
    tz = timezone_of(settings)
    report = DailyReport()
    for day in due_days(
        last_written(registry), now.astimezone(tz), settings.summary_retention_days
    ):
        if not claim_day(registry, day, now):
            report.skipped.append(day.isoformat())
            continue
        write_summary(registry, settings, Day(day, tz), now)
        _set(registry, day, written_at=datetime.now(UTC))
        report.written.append(day.isoformat())
        log.info("daily summary of %s written", day)
    report.pruned = len(prune(registry, settings, today(tz, now).date))
    report.delivered, complete = deliver_pending(registry, settings, now)
    report.delivery_failed = not complete
    return report
