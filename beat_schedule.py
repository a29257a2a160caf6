"""What Celery beat runs, and when. Each entry names its queue."""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab

from ugro.settings import Settings
from ugro.summary.daily import SCHEDULED_AT
from ugro.transport.queues import control_queue


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    control = control_queue(settings)
    return {
        # Safety net: dispatch is event-driven (on submit, on job end); this tick
        # catches anything a crash or a lost request left in the queue.
        "dispatch-tick": {
            "task": "ugro.dispatch",
            "schedule": settings.dispatch_interval,
            "options": {"queue": control, "expires": settings.dispatch_interval},
        },
        # Node health: ticks at the shortest interval; the task itself lets one
        # sweep through per adaptive interval (5 s busy or degraded, up to 60 s calm).
        "health-sweep": {
            "task": "ugro.health_sweep",
            "schedule": settings.health_min_interval,
            "options": {"queue": control, "expires": settings.health_min_interval},
        },
        # Progress and status of every active job; stops what is stuck.
        "progress-scan": {
            "task": "ugro.progress_scan",
            "schedule": settings.progress_interval,
            "options": {"queue": control, "expires": settings.progress_interval},
        },
        # The daily summary at 23:59 in UGRO_TIMEZONE: crontab reads the clock in
        # the app's timezone, which is that one. The task writes each day once
        # (a row per date in the registry), so a second beat started by mistake
        # doubles nothing; days missed while beat was down are caught up at its
        # start (workers/beat.py) and by the next run. No expiry: a late run still
        # writes the right day.
        "daily-summary": {
            "task": "ugro.daily_summary",
            "schedule": crontab(hour=SCHEDULED_AT.hour, minute=SCHEDULED_AT.minute),
            "options": {"queue": control},
        },
        # Ended jobs past UGRO_JOB_RETENTION_DAYS go, once a day at 00:30 (the task
        # does nothing while it is not set). Nothing running or queued is touched,
        # and a run removes what is due whenever it comes: no expiry.
        "job-retention": {
            "task": "ugro.job_retention",
            "schedule": crontab(hour=0, minute=30),
            "options": {"queue": control},
        },
        # Finds lost jobs (dead workers) and rebuilds live state after a Redis wipe.
        "reconcile-tick": {
            "task": "ugro.reconcile",
            "schedule": settings.reconcile_interval,
            "options": {"queue": control, "expires": settings.reconcile_interval},
        },
    }
