"""What the dashboard shows of jobs: one flat row per job for the list, and a job's
page (its spec, attempts, members and logs), read from the registry and the tree.

A running job's progress is read from its directory when its files changed (the
progress scan records it once a minute; the page's bar moves as epochs are
written), and kept per job until they change again.
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ugro.client import Client
from ugro.job import Job
from ugro.jobs.lifecycle import JobStatus
from ugro.jobs.redact import redact_env
from ugro.registry.models import JobRow

#: Job list filters a request may give, and the query parameter of each.
FILTERS = ("status", "user", "tag", "node", "name", "array")
# "attempt 2 ended: oom - CUDA out of memory" / "attempt 1 lost: lease ran out"
_ATTEMPT_LINE = re.compile(r"attempt (\d+) (ended|lost): (.*)$")


@dataclass(frozen=True)
class JobFilter:
    """The job list's filters: each None (any) or the value to match; ``name`` a
    part of the name, the others exact."""

    status: str | None = None
    user: str | None = None
    tag: str | None = None
    node: str | None = None
    name: str | None = None
    array: str | None = None

    @classmethod
    def of(cls, query: dict[str, str]) -> JobFilter:
        return cls(**{key: (query.get(key) or None) for key in FILTERS})

    def matches(self, row: dict[str, Any]) -> bool:
        if self.tag is not None and self.tag not in row["tags"]:
            return False
        if self.node is not None and self.node not in row["nodes"]:
            return False
        if self.name is not None and self.name.lower() not in row["name"].lower():
            return False
        return self.array is None or row["array_id"] == self.array


class ProgressCache:
    """Running jobs' progress read from their directories, kept while the files
    that move it (the folder, where an epoch's directory appears, and
    ``metrics.jsonl``) are unchanged."""

    def __init__(self) -> None:
        self._found: dict[str, tuple[tuple[int, int], str | None]] = {}
        self._lock = threading.Lock()

    def progress(self, client: Client, row: JobRow) -> str | None:
        from ugro.progress.jobs import progress_now

        stamp = self.stamp(client, row.id)
        with self._lock:
            kept = self._found.get(row.id)
        if kept is not None and kept[0] == stamp:
            return kept[1]
        found = progress_now(client.rt, row)
        with self._lock:
            self._found[row.id] = (stamp, found)
        return found

    @staticmethod
    def stamp(client: Client, job_id: str) -> tuple[int, int]:
        """What changes when a running job's progress may have: its folder's mtime
        and its metrics' size."""
        paths = client.rt.paths(job_id)
        try:
            root = os.stat(paths.root).st_mtime_ns
        except OSError:
            root = 0
        try:
            metrics = os.stat(paths.metrics).st_size
        except OSError:
            metrics = -1
        return root, metrics

    def forget(self, keep: set[str]) -> None:
        """Drop what is kept of jobs not in ``keep`` (those no longer running)."""
        with self._lock:
            for job_id in [j for j in self._found if j not in keep]:
                del self._found[job_id]


def _spec_of(row: JobRow) -> dict[str, Any]:
    try:
        data = json.loads(row.spec)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def job_row(client: Client, row: JobRow, cache: ProgressCache) -> dict[str, Any]:
    """The job list's row of a job: what `ugro list` shows, and its tags, user,
    nodes and times."""
    progress = None
    if row.status == JobStatus.RUNNING.value:
        progress = cache.progress(client, row)
    job = Job.from_row(row, client.settings.jobs_dir, progress)
    return row_of(job, _spec_of(row))


def row_of(job: Job, spec: dict[str, Any]) -> dict[str, Any]:
    info = job.progress
    return {
        "id": job.id,
        "name": job.name,
        "kind": job.kind,
        "status": job.status.value,
        "run_status": job.run_status,
        "user": job.user,
        "group": job.group,
        "tags": list(spec.get("tags") or []),
        "priority": job.priority,
        "gpus": job.gpus,
        "num_nodes": job.num_nodes,
        "nodes": job.nodes,
        "gpu_indices": job.gpu_indices,
        "attempt": job.attempt,
        "array_id": job.array_id,
        "array_index": job.array_index,
        "hold": job.hold,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "exit_reason": job.exit_reason,
        "error": job.error,
        "percent": info.percent if info else None,
        "completed_epochs": info.completed_epochs if info else None,
        "total_epochs": info.total_epochs if info else spec.get("epochs"),
        "best_score": info.best_score if info else None,
        "latest_score": info.latest_score if info else None,
        "score_name": info.score_name if info else None,
        "eta_seconds": info.eta_seconds if info else None,
        "complete": info.complete if info else False,
    }


def list_rows(
    client: Client, wanted: JobFilter, cache: ProgressCache, limit: int
) -> list[dict[str, Any]]:
    """Every job the filter matches, newest first, at most ``limit``."""
    statuses = None
    if wanted.status is not None:
        statuses = [JobStatus(wanted.status)] if wanted.status in _STATUSES else []
    if statuses == []:
        return []
    narrowed = wanted.tag or wanted.node or wanted.name or wanted.array
    rows = client.rt.registry.list_jobs(
        statuses=statuses, user=wanted.user, limit=None if narrowed else limit
    )
    found = []
    running = set()
    for row in rows:
        shown = job_row(client, row, cache)
        if row.status == JobStatus.RUNNING.value:
            running.add(row.id)
        if wanted.matches(shown):
            found.append(shown)
            if len(found) >= limit:
                break
    if wanted.status is None or wanted.status == JobStatus.RUNNING.value:
        cache.forget(running)
    return found


_STATUSES = frozenset(status.value for status in JobStatus)


def rows_by_id(client: Client, ids: list[str], cache: ProgressCache) -> list[dict[str, Any]]:
    """The list rows of these jobs (those that exist), in one registry read."""
    return [job_row(client, row, cache) for row in client.rt.registry.list_jobs(ids=ids)]


def attempt_reasons(console: str) -> dict[int, str]:
    """Why each attempt ended, from the lines ugro wrote in the job's console.log."""
    found: dict[int, str] = {}
    for line in console.splitlines():
        match = _ATTEMPT_LINE.search(line)
        if match:
            number, how, rest = match.groups()
            found[int(number)] = rest if how == "ended" else f"lost: {rest}"
    return found


def job_page(client: Client, job_id: str, cache: ProgressCache) -> dict[str, Any]:
    """A job's page: its row, its spec (secret env values hidden), its attempts
    with their exit class and why, its members, the logs it has and, while it is
    queued, why it waits.

    Raises:
        JobNotFound: no job has that id.
        SpecError: not a valid job id.
    """
    from ugro.jobs.spec import check_job_id

    check_job_id(job_id)
    registry = client.rt.registry
    row = registry.get_job(job_id)
    shown = job_row(client, row, cache)
    spec = _spec_of(row)
    spec["env"] = redact_env(spec.get("env") or {})
    paths = client.rt.paths(row.id)
    try:
        console = paths.console.read_text(encoding="utf-8", errors="replace")
    except OSError:
        console = ""
    reasons = attempt_reasons(console)
    attempts = []
    for attempt in registry.attempts(row.id):
        why = reasons.get(attempt.number)
        if why is None and attempt.number == row.attempt and row.error:
            why = row.error
        attempts.append(
            {
                "number": attempt.number,
                "node": attempt.node,
                "gpus": json.loads(attempt.gpu_indices or "[]"),
                "started_at": _iso(attempt.started_at),
                "ended_at": _iso(attempt.ended_at),
                "exit_code": attempt.exit_code,
                "exit_signal": attempt.exit_signal,
                "exit_reason": attempt.exit_reason,
                "why": why,
            }
        )
    members = [
        {"rank": m.rank, "node": m.node} for m in (client.members(row.id) if row.attempt else [])
    ]
    launch_per_gpu = spec.get("launch") == "gpu"
    ranks = int(spec.get("nodes") or 1) * (row.gpus if launch_per_gpu else 1)
    waiting = None
    if row.status == JobStatus.QUEUED.value:
        try:
            waiting = client.why_waiting(row.id)
        except Exception as exc:  # Redis away: the page still shows the rest
            waiting = f"unknown now ({type(exc).__name__})"
    return {
        "job": shown,
        "spec": spec,
        "attempts": attempts,
        "members": members,
        "ranks": ranks,
        "why_waiting": waiting,
        "job_dir": str(paths.root),
        "console": console[-20_000:],
    }
