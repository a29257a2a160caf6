"""Telling a job's end to its submitter's notification URLs.

A job submitted with ``notify`` ("failed" or "ended"; else ``UGRO_NOTIFY_ON``) is
told when it reaches a final status: ``job_ended`` calls ``announce_end`` for
every such change. The notice goes to the ``ugro.alert`` task, which sends it
through apprise and retries a refused delivery with backoff, so no worker waits
on a webhook. The tasks of an array or sweep are told once, together, when the
last of them ended: a marker file made exclusively beside the array's record
lets only one of two tasks ending at the same moment send it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections import Counter
from typing import Any

from ugro.jobs.lifecycle import JobStatus
from ugro.jobs.spec import JobSpec
from ugro.notify import array_end_message, job_end_message
from ugro.registry.holds import array_ended, array_tasks
from ugro.registry.models import JobRow, as_utc
from ugro.runtime import Runtime
from ugro.transport.queues import control_queue

log = logging.getLogger(__name__)
#: Failures named in an array's notice; the rest are counted.
_FAILURES_SHOWN = 5


def announce_end(rt: Runtime, job_id: str, array_id: str | None) -> None:
    """Tell ``job_id``'s end (or its array's, once the array's last task ended)
    when the job asked for it. Never raises: the end is recorded already."""
    if not rt.settings.notify_url_list:
        return
    try:
        row = rt.registry.get_job(job_id)
        wanted = JobSpec.model_validate_json(row.spec).notify or rt.settings.notify_on
        if wanted == "never":
            return
        if array_id is None:
            if wanted == "ended" or row.status == JobStatus.FAILED.value:
                _send(rt, *job_end_message(*_job_fields(row)))
            return
        if not array_ended(rt.registry, array_id):
            return
        tasks = array_tasks(rt.registry, [array_id]).get(array_id, [])
        failed = [task for task in tasks if task.status == JobStatus.FAILED.value]
        if (wanted == "ended" or failed) and _first_to_tell(rt, array_id):
            statuses = Counter(task.status for task in tasks)
            failures = [(task.id, task.error or "-") for task in failed[:_FAILURES_SHOWN]]
            _send(rt, *array_end_message(array_id, dict(statuses), failures))
    except Exception:  # a notice must never undo or stop what follows an end
        log.warning("telling the end of %s failed", job_id, exc_info=True)


def _job_fields(
    row: JobRow,
) -> tuple[str, str, str, str | None, float | None, str | None, str | None]:
    started, finished = as_utc(row.started_at), as_utc(row.finished_at)
    duration = (finished - started).total_seconds() if started and finished else None
    return row.id, row.name, row.status, row.exit_reason, duration, row.error, _best(row.progress)


def _best(progress: str | None) -> str | None:
    """The best score the job's last progress recorded, as ``name=value``: its
    ``best_score`` is a number (older records) or {metric: value}."""
    if not progress:
        return None
    with contextlib.suppress(ValueError, TypeError):
        found: dict[str, Any] = json.loads(progress)
        best = found.get("best_score")
        name = found.get("score_name") or "score"
        if isinstance(best, dict) and best:
            name, best = next(iter(best.items()))
        if isinstance(best, int | float) and not isinstance(best, bool):
            return f"{name}={best:.6g}"
    return None


def _first_to_tell(rt: Runtime, array_id: str) -> bool:
    """Whether this process is the one to tell the array's end (made once, by an
    exclusive create on the shared data dir)."""
    marker = rt.settings.arrays_dir / f"{array_id}.notified"
    marker.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    return True


def _send(rt: Runtime, title: str, body: str) -> None:
    rt.app.send_task(
        "ugro.alert", args=[title, body], queue=control_queue(rt.settings), ignore_result=True
    )
