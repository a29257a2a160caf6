"""Celery beat with ugro's schedule: ``python -m workers.beat``."""

from __future__ import annotations

from typing import Any

from celery.signals import beat_init

# First: RedBeat's own beat_init receiver takes the lock (a second beat waits
# there), so the start-up work below runs only in the beat that schedules.
import ugro.transport.beat_scheduler  # noqa: F401
from beat_schedule import beat_schedule
from ugro.execution.reconcile import reconcile
from ugro.runtime import Runtime
from ugro.settings import Settings
from ugro.transport.celery_app import make_app
from ugro.transport.queues import control_queue


def main() -> None:
    settings = Settings()
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    app = make_app(settings)
    app.conf.beat_schedule = beat_schedule(settings)

    @beat_init.connect(weak=False)
    def _start(**_: Any) -> None:
        # Beat (re)starting may follow a Redis wipe: rebuild live state first.
        rt = Runtime.open(settings)
        try:
            reconcile(rt)
        finally:
            rt.close()
        # Days whose 23:59 summary was missed while beat was down are written now
        # by a worker (the task writes each due day once and delivers it).
        app.send_task("ugro.daily_summary", queue=control_queue(settings))

    app.start(["beat", "--loglevel", "INFO"])


if __name__ == "__main__":
    main()
