"""Orphan scan: kill job processes on this node that no running attempt owns.

A job's processes carry its tag (``UGRO_JOB_ID``, ``UGRO_ATTEMPT``, ``UGRO_NODE``
and ``UGRO_JOB_DIR`` in their environment). The node agent scans for them every
``orphan_scan_interval``: a process whose job is not running on this node as that
attempt (its worker died and the job was declared lost, or it outlived its job)
is stopped like a job: SIGTERM, the grace period, SIGKILL.
"""

from __future__ import annotations

import logging

import psutil

from ugro.execution.processes import tagged_jobs, terminate
from ugro.jobs.lifecycle import JobStatus
from ugro.registry.models import placement_of
from ugro.runtime import Runtime

log = logging.getLogger(__name__)


def _tag(proc: psutil.Process, name: str) -> str | None:
    try:
        return (proc.info.get("environ") or proc.environ()).get(name)
    except psutil.Error:
        return None


def kill_orphans(rt: Runtime, node: str, grace: float | None = None) -> int:
    """Stop every orphaned job process of this installation on this node."""
    jobs_dir = str(rt.settings.jobs_dir) + "/"
    mine = {}
    for job_id, procs in tagged_jobs().items():
        ours = [
            p
            for p in procs
            if _tag(p, "UGRO_NODE") == node and (_tag(p, "UGRO_JOB_DIR") or "").startswith(jobs_dir)
        ]
        if ours:
            mine[job_id] = ours
    if not mine:
        return 0
    rows = {row.id: row for row in rt.registry.list_jobs(ids=list(mine))}
    orphans: list[psutil.Process] = []
    for job_id, procs in mine.items():
        row = rows.get(job_id)
        # (a gang job runs on each of its placement's nodes)
        nodes = {n for n, _ in placement_of(row)} if row is not None else set()
        for proc in procs:
            owned = (
                row is not None
                and row.status == JobStatus.RUNNING.value
                and node in nodes
                and _tag(proc, "UGRO_ATTEMPT") == str(row.attempt)
            )
            if not owned:
                orphans.append(proc)
                log.warning("killing orphan pid %s of job %s", proc.pid, job_id)
        if not all(p in orphans for p in procs) or row is None:
            continue
        rt.paths(job_id).append_console(f"killed {len(procs)} orphaned process(es) on {node}")
        rt.registry.add_event("orphans_killed", f"{job_id}: {len(procs)} on {node}", job_id, node)
    # Orphans are the children of the supervisor or a GPU worker (subreapers),
    # which reap them; the agent only waits for them to end.
    terminate(orphans, rt.settings.stop_grace if grace is None else grace)
    return len(orphans)
