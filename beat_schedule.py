"""What Celery beat runs, and when. Each entry names its queue."""

from __future__ import annotations

from typing import Any

from ugro.runtime import control_queue
from ugro.settings import Settings


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
        # Finds lost jobs (dead workers) and rebuilds live state after a Redis wipe.
        "reconcile-tick": {
            "task": "ugro.reconcile",
            "schedule": settings.reconcile_interval,
            "options": {"queue": control, "expires": settings.reconcile_interval},
        },
    }
