"""The Celery app: transport settings, each with its reason.

Celery is ugro's transport, not its source of truth: results live in the registry,
so no result backend is configured and every task ignores its result.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from celery import Celery

from ugro.live.keys import Keys
from ugro.settings import Settings
from ugro.transport.guarded_redis import install as install_guarded_transport
from ugro.transport.queues import control_queue


def make_app(settings: Settings) -> Any:
    # What a queue holds that is not a message is dropped with a line, not fatal.
    install_guarded_transport()
    app = Celery("ugro", broker=settings.broker_url, include=["ugro.tasks"])
    app.conf.update(
        # JSON only: a pickled message is refused, never executed.
        task_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        result_accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        # No results, so no beat entry to clean them up.
        result_expires=None,
        # A job runs for days, far past the transport's visibility timeout, so job
        # messages are acknowledged on receipt (not late) and ugro owns liveness with
        # leases and heartbeats. Celery's time limits do not follow grandchildren,
        # so none are set: ugro stops the job's whole process group itself.
        task_acks_late=False,
        task_time_limit=None,
        task_soft_time_limit=None,
        # One job in hand per GPU worker and nothing prefetched behind it.
        worker_prefetch_multiplier=1,
        worker_disable_prefetch=True,
        task_default_queue=control_queue(settings),
        task_create_missing_queues=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            # Every Celery key shares ugro's prefix, so installations sharing one
            # Redis server stay apart.
            "global_keyprefix": Keys(settings.redis_prefix).celery_prefix,
        },
        # Events let Flower show workers and tasks; they carry no job environment.
        # No "task-sent" event: it would double the messages of every submission.
        worker_send_task_events=True,
        worker_hijack_root_logger=False,
        enable_utc=True,
        timezone=settings.timezone,
    )
    # The schedule itself (beat_schedule.py) is beat's alone: workers/beat.py sets it.
    app.conf.update(
        # One beat schedules at a time: RedBeat's lock in Redis (ugro/transport/beat_scheduler.py).
        beat_scheduler="ugro.transport.beat_scheduler:SingleBeat",
        # Beat looks at its schedule at least this often (the shortest entry ticks
        # every health_min_interval), and a standby beat at the lock.
        beat_max_loop_interval=5.0,
        redbeat_redis_url=settings.effective_redis_url,
        # Under ugro's prefix, so installations sharing a server keep apart.
        redbeat_key_prefix=Keys(settings.redis_prefix).redbeat,
        redbeat_lock_timeout=int(settings.beat_lock_timeout),
        # Ride out a Redis restart as the workers do, instead of dying mid-tick.
        redbeat_redis_options={"retry_period": 60},
    )
    app.ugro_settings = settings
    return app


@cache
def environment_app() -> Any:
    """The app of the environment's settings (``UGRO_*``), made once: what Celery's
    own commands find as ``celery -A ugro`` (``ugro.app``), ``status``, ``inspect``
    and ``events`` alike, on the embedded Redis as on a shared one."""
    return make_app(Settings())


def __getattr__(name: str) -> Any:
    # ``celery -A ugro.transport.celery_app`` looks for ``app`` here.
    if name in ("app", "celery"):
        return environment_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
