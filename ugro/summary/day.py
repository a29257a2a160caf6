"""The calendar day a summary covers, in the configured timezone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ugro.errors import SpecError
from ugro.settings import Settings


def timezone_of(settings: Settings) -> ZoneInfo:
    """The configured timezone; SpecError when the name is not one zoneinfo knows."""
    try:
        return ZoneInfo(settings.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise SpecError(
            f"UGRO_TIMEZONE: {settings.timezone!r} is not a timezone; use an IANA name"
            " such as UTC or Europe/Berlin"
        ) from None


@dataclass(frozen=True)
class Day:
    """One calendar day in a timezone, and its bounds in UTC."""

    date: date
    tz: ZoneInfo

    @property
    def since(self) -> datetime:
        return datetime.combine(self.date, time(0), self.tz).astimezone(UTC)

    @property
    def until(self) -> datetime:
        return datetime.combine(self.date + timedelta(days=1), time(0), self.tz).astimezone(UTC)

    def local(self, moment: datetime) -> datetime:
        return moment.astimezone(self.tz)


def parse_day(text: str, tz: ZoneInfo) -> Day:
    """A ``YYYY-MM-DD`` date; SpecError naming the bad value otherwise."""
    try:
        return Day(date.fromisoformat(text), tz)
    except ValueError:
        raise SpecError(f"--date: {text!r} is not a date like 2026-11-23 (YYYY-MM-DD)") from None


def today(tz: ZoneInfo, now: datetime | None = None) -> Day:
    return Day((now or datetime.now(UTC)).astimezone(tz).date(), tz)
