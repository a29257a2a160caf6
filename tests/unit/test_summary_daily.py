"""Which days the daily summary is due for: a pure decision."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from ugro.summary.daily import due_days


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
