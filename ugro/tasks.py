"""Celery tasks: thin shells that decode, call domain code and report."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from celery import current_app, shared_task
from celery.signals import worker_shutting_down

from ugro.errors import RegistryUnreachable
from ugro.execution.attempt import run_attempt
from ugro.execution.gang import run_member
from ugro.execution.orphans import kill_orphans
from ugro.execution.reconcile import reconcile
from ugro.live.job_message import RUN_JOB
from ugro.progress.jobs import progress_scan
from ugro.runtime import Runtime
from ugro.scheduling.dispatch import dispatch_pending
from ugro.scheduling.fair_share import rank_queue
from ugro.scheduling.preemption import preempt_waiting

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Set when this worker process shuts down: running jobs go back to the queue.
SHUTTING_DOWN = threading.Event()
_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def runtime() -> Runtime:
    """This worker process's Runtime, opened once."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = Runtime.open(current_app.ugro_settings, wait_out_restarts=True)
            _runtime._app = current_app
        return _runtime


@worker_shutting_down.connect
def _on_shutdown(**_: Any) -> None:
    SHUTTING_DOWN.set()


@shared_task(name=RUN_JOB, ignore_result=True, Request="ugro.transport.receipt_ack:ReceivedJob")
def run_job(job_id: str, token: str, node: str, gpus: list[int], rank: int | None = None) -> str:
    """Run one placed job on this GPU worker (with ``rank``: that member of a gang job)."""
    try:
        gpus = [int(g) for g in gpus]
        rank = None if rank is None else int(rank)
        if not all(isinstance(text, str) for text in (job_id, token, node)):
            raise TypeError("job_id, token and node must be text")
    except (TypeError, ValueError) as exc:
        # JSON, but not what ugro sends: never run, one line in the log.
        log.warning("dropped a job message with arguments of the wrong kinds: %s", exc)
        return "dropped"
    if rank is not None:
        outcome = run_member(runtime(), job_id, token, node, gpus, rank, SHUTTING_DOWN)
    else:
        outcome = run_attempt(runtime(), job_id, token, node, gpus, SHUTTING_DOWN)
    log.info("job %s: %s", job_id, outcome)
    return outcome


def _unless_registry_away(name: str, tick: Callable[[], T]) -> T | None:
    """A scheduled tick, skipped with a line in the log while the registry does not
    answer: it decides nothing from what it cannot read, and the next tick runs."""
    try:
        return tick()
    except RegistryUnreachable as exc:
        log.warning("%s skipped: %s", name, exc)
        return None


@shared_task(name="ugro.reconcile", ignore_result=True)
def reconcile_task() -> dict[str, int] | None:
    """Beat's reconcile tick: lost jobs, live state rebuilt after a wipe."""
    return _unless_registry_away("reconcile", lambda: reconcile(runtime()))


@shared_task(name="ugro.progress_scan", ignore_result=True)
def progress_scan_task() -> dict[str, int] | None:
    """Beat's progress scan: progress.json and status of every active job."""
    return _unless_registry_away("progress scan", lambda: progress_scan(runtime()))


@shared_task(name="ugro.kill_orphans", ignore_result=True)
def kill_orphans_task() -> int | None:
    """Stop this node's orphaned job processes now (sent to the node's own queue)."""
    rt = runtime()
    return _unless_registry_away("orphan scan", lambda: kill_orphans(rt, rt.settings.node_name))


@shared_task(name="ugro.dispatch", ignore_result=True)
def dispatch() -> int | None:
    """Beat's safety-net tick: rank the queue by fair share, then place whatever
    pending jobs fit."""

    def tick() -> int:
        rt = runtime()
        rank_queue(rt)  # the fair share order, then a pass in it
        placed = dispatch_pending(rt)
        preempt_waiting(rt)  # for a short job that still waits
        return placed

    return _unless_registry_away("dispatch", tick)


@shared_task(name="ugro.health_sweep", ignore_result=True)
def health_sweep_task() -> dict[str, object] | None:
    """Beat's health sweep: runs when the adaptive interval says it is due."""
    # Imported here: the sweep brings paramiko, which GPU workers never need.
    from ugro.health.sweep import health_sweep

    rt = runtime()
    report = _unless_registry_away("health sweep", lambda: health_sweep(rt))
    if report is None:
        return None
    if report.recovered:
        dispatch_pending(rt)  # jobs may have waited for exactly these nodes
    return {"nodes": {n: s.level for n, s in report.nodes.items()}, "interval": report.interval}


@shared_task(name="ugro.job_retention", ignore_result=True)
def job_retention_task() -> int | None:
    """Beat's daily retention run: remove the jobs ended longer ago than
    ``job_retention_days`` (nothing when it is not set)."""
    from ugro.cleanup import apply_retention

    done = _unless_registry_away("job retention", lambda: apply_retention(runtime()))
    return None if done is None else done.count


class DeliveryFailed(Exception):
    """A notification URL refused or could not be reached (retried by Celery)."""


@shared_task(
    name="ugro.alert",
    ignore_result=True,
    autoretry_for=(DeliveryFailed,),
    retry_backoff=5,
    retry_backoff_max=300,
    max_retries=6,
)
def alert_task(title: str, body: str) -> None:
    """Send a critical alert to the notification URLs; a failure is retried with
    backoff for about ten minutes, then given up (it stays in the events table)."""
    from ugro.notify import notify

    if not notify(runtime().settings, title, body):
        raise DeliveryFailed(title)


#: Delivery retries of the daily summary: with the job-retry backoff (10 s
#: doubling to 10 min by default) about half an hour; a day still undelivered is
#: tried again by the next daily run.
_SUMMARY_DELIVERY_RETRIES = 8


@shared_task(name="ugro.daily_summary", bind=True, ignore_result=True)
def daily_summary_task(self: Any) -> dict[str, Any]:
    """Beat's 23:59 run (and beat start's catch-up): write each due day's summary
    once, prune old ones, deliver new ones. A failed delivery is retried as a new
    message after a backoff, so the control worker is not held while a webhook is
    down; the run is idempotent, so the retry writes nothing twice."""
    from ugro.jobs.retry import backoff
    from ugro.summary.daily import run_daily

    rt = runtime()
    report = run_daily(rt.registry, rt.settings)
    if report.delivery_failed:
        settings = rt.settings
        delay = backoff(
            self.request.retries + 1, settings.retry_backoff, settings.retry_backoff_max
        )
        raise self.retry(
            exc=DeliveryFailed("daily summary"),
            countdown=delay,
            max_retries=_SUMMARY_DELIVERY_RETRIES,
        )
    return vars(report)
