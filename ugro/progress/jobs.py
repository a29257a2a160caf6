"""The progress scan on beat: refresh every active job's progress and status, and
stop what is stuck.

Active jobs are the running ones and the ended ones whose final progress is not
recorded yet; the thousands of older job directories are not touched, and an
active one whose files did not change is not read again.
"""

from __future__ import annotations

import json
import logging
import time

from ugro.jobs.lifecycle import JobStatus
from ugro.jobs.paths import write_json_atomic
from ugro.jobs.spec import JobSpec
from ugro.progress.base import ProgressInfo
from ugro.progress.scan import STUCK, Scanner, decide_status, last_change
from ugro.progress.trackers import tracker_for_kind
from ugro.registry.models import JobRow
from ugro.runtime import Runtime

log = logging.getLogger(__name__)

_scanner: Scanner | None = None
# Ended jobs whose final progress is recorded per pass. A worker records it as a job
# ends; this catches the rest (jobs declared lost, cancelled before they ran).
_SETTLE_PER_PASS = 50


def progress_scan(rt: Runtime) -> dict[str, int]:
    """One pass; returns how many jobs it saw and how many it found stuck."""
    global _scanner
    if _scanner is None:
        _scanner = Scanner(rt.settings.stuck_after, rt.settings.outdated_after)
    now = time.time()
    rows = rt.registry.list_jobs(statuses=[JobStatus.RUNNING])
    rows += rt.registry.unsettled_progress(limit=_SETTLE_PER_PASS)
    stuck = 0
    for row in rows:
        try:
            status = _refresh(rt, _scanner, row, now)
        except Exception:  # one bad directory must not stop the scan of the others
            log.exception("progress scan of %s failed", row.id)
            continue
        if status == STUCK and row.status == JobStatus.RUNNING.value:
            stuck += _stop_stuck(rt, row)
    return {"scanned": len(rows), "stuck": stuck}


def progress_record(
    rt: Runtime,
    row: JobRow,
    scanner: Scanner | None,
    alive: bool,
    ended_ok: bool,
    ended: float | None,
    now: float,
    spec: JobSpec | None = None,
) -> tuple[str, str]:
    """(status, the JSON recorded as the job's progress) from its directory;
    ``spec``: the row's, when the caller has it parsed already."""
    spec = spec or JobSpec.model_validate_json(row.spec)
    root = rt.paths(row.id).root
    tracker = tracker_for_kind(spec.kind, spec.epoch_files)
    if scanner is None:
        info = tracker.read(root, spec.epochs)
    else:
        info = scanner.progress(root, tracker, spec.epochs)
    info = info.model_copy(update={"started_at": row.started_at})
    seen = last_change(root) if scanner is None else scanner.last_change(root, spec.epochs)
    changed = seen or (row.started_at.timestamp() if row.started_at else None)
    if ended_ok and info.runner_type == "trainer" and info.total_epochs is None:
        info = completed_without_plan(info)
    status = decide_status(
        alive,
        info.complete,
        changed,
        ended,
        now,
        rt.settings.stuck_after,
        rt.settings.outdated_after,
    )
    return status, json.dumps({"status": status, **info.model_dump(mode="json")}, sort_keys=True)


def progress_file(encoded: str) -> dict[str, object]:
    """What ``progress.json`` holds for a recorded progress (the registry keeps
    ugro's names; the file is in the progress plan's format, ``ProgressInfo.to_file``)."""
    data = json.loads(encoded)
    status = data.pop("status", None)
    return ProgressInfo.model_validate(data).to_file(status)


def completed_without_plan(info: ProgressInfo) -> ProgressInfo:
    """A trainer's progress once it ended well with no planned epoch count: with
    nothing to measure against, its exit says it completed, and the epochs it wrote
    are its total (none written: the total stays unknown). So the progress file,
    `--json` and the tables say done, not 0 % of an unknown total."""
    return info.model_copy(
        update={
            "complete": True,
            "total_epochs": info.completed_epochs or None,
            "percent": 100.0,
            "eta_seconds": 0.0,
        }
    )


def final_progress(rt: Runtime, row: JobRow, ok: bool, spec: JobSpec | None = None) -> str | None:
    """A job's progress as it ends, written to progress.json; recorded by the caller
    with its final status. None when the directory cannot be read."""
    now = time.time()
    try:
        _, encoded = progress_record(rt, row, None, False, ok, now, now, spec)
        write_json_atomic(rt.paths(row.id).progress, progress_file(encoded))
    except Exception:  # progress is a report: it never stands in the way of an exit
        log.exception("final progress of %s", row.id)
        return None
    return encoded


def progress_now(rt: Runtime, row: JobRow) -> str | None:
    """A running job's progress read from its directory now, for a job the scan has
    not reached yet (it runs once a minute); records nothing. None when the
    directory cannot be read."""
    try:
        return progress_record(rt, row, None, True, False, None, time.time())[1]
    except Exception:  # a report only: `ugro list` shows "-" rather than failing
        log.debug("progress of %s", row.id, exc_info=True)
        return None


def _refresh(rt: Runtime, scanner: Scanner, row: JobRow, now: float) -> str:
    alive = row.status == JobStatus.RUNNING.value
    ended = row.finished_at.timestamp() if row.finished_at else None
    ok = row.status == JobStatus.FINISHED.value
    status, encoded = progress_record(rt, row, scanner, alive, ok, ended, now)
    # Recorded only while the job is as it was read: a worker that ended it since
    # recorded its final progress, and a finding of it running would overwrite that.
    if encoded != row.progress and rt.registry.set_progress(row.id, encoded, row.status):
        write_json_atomic(rt.paths(row.id).progress, progress_file(encoded))
        rt.live.set_job(row.id, progress=encoded)
    return status


def _stop_stuck(rt: Runtime, row: JobRow) -> int:
    if rt.live.stops.cancel_requested(row.id) is not None:
        # Asked already (by an earlier pass the worker has not acted on yet, or by a
        # person): one stop and one stuck event an attempt, not one a pass.
        return 0
    quiet = rt.settings.stuck_after
    why = f"no log or metric changed for {quiet:g} s"
    rt.live.stops.request_cancel(row.id, rt.settings.stop_grace, reason="stuck")
    rt.paths(row.id).append_console(f"stuck: {why}; stopping it")
    rt.registry.add_event("stuck", f"{row.id} stuck: {why}", row.id, row.node)
    return 1
