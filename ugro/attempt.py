"""One attempt of a job on a GPU worker: claim, run, record, release.

The claim (placed -> running, attempt + 1, compare-and-set in the registry) comes
before anything runs, so a duplicate delivery of the same message runs nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ugro.dispatch import dispatch_pending
from ugro.paths import JobPaths, write_json_atomic
from ugro.registry import JobRow, utcnow
from ugro.runner import ExitInfo, RunControl, run_command
from ugro.runtime import Runtime
from ugro.spec import JobSpec
from ugro.status import JobStatus

log = logging.getLogger(__name__)

#: What each way of ending makes of the job's status.
_OUTCOME = {
    "ok": JobStatus.FINISHED,
    "interrupted": JobStatus.QUEUED,
    "lost": JobStatus.LOST,
}


def run_attempt(
    rt: Runtime, job_id: str, token: str, node: str, gpus: list[int], stop: threading.Event
) -> str:
    """Run a placed job to its end on this worker; returns what happened, for logs."""
    holder = f"{job_id}|{token}"
    # The lease proves the placement is still ours; renewing it also moves its TTL
    # from the placement window to the running window.
    if not rt.live.renew(node, gpus, holder, rt.settings.lease_ttl):
        return "skipped: the placement's lease has expired or was taken"
    claimed = rt.transition(
        job_id,
        JobStatus.RUNNING,
        expect=[JobStatus.PLACED],
        attempt=JobRow.attempt + 1,
        started_at=utcnow(),
        finished_at=None,
        exit_code=None,
        exit_signal=None,
        exit_reason=None,
        error=None,
    )
    if not claimed:
        return "skipped: this attempt was claimed already (duplicate delivery)"
    job = rt.registry.get_job(job_id)
    paths = rt.paths(job_id)
    try:
        info = _execute(rt, job, paths, node, gpus, holder, stop)
    except Exception as exc:  # the worker must survive whatever one job does
        log.exception("job %s failed in ugro itself", job_id)
        info = ExitInfo("error", 0.0, 0.0, error=f"ugro error: {exc}")
    _finish(rt, job, paths, node, gpus, info)
    rt.live.release(node, gpus, holder)
    if not stop.is_set():  # a worker on its way out hands out no more work
        dispatch_pending(rt)
    return f"{info.reason} ({info.error or 'exit 0'})"


def job_environment(
    rt: Runtime, job: JobRow, spec: JobSpec, paths: JobPaths, node: str, gpus: list[int]
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(spec.env)
    env.update(rt.live.secrets(job.id))
    env.update(
        {
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",  # indices as nvidia-smi shows them
            "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in gpus),
            "UGRO_JOB_ID": job.id,
            "UGRO_JOB_NAME": job.name,
            "UGRO_JOB_DIR": str(paths.root),
            "UGRO_CHECKPOINT_DIR": str(paths.checkpoints),
            "UGRO_TENSORBOARD_DIR": str(paths.tensorboard),
            "UGRO_ATTEMPT": str(job.attempt),
            "UGRO_NODE": node,
            "PYTHONUNBUFFERED": "1",  # a Python job's prints reach the log as they happen
        }
    )
    return env


def _execute(
    rt: Runtime,
    job: JobRow,
    paths: JobPaths,
    node: str,
    gpus: list[int],
    holder: str,
    stop: threading.Event,
) -> ExitInfo:
    spec = JobSpec.model_validate_json(job.spec)
    argv = spec.argv()
    cwd = Path(spec.working_dir) if spec.working_dir else paths.root
    rank_log = paths.rank_log(0)
    rank_log.touch()
    if not paths.training_log.exists():
        # One file, two names: the single-rank training log is rank 0's log, with no
        # copying of a byte of output.
        os.link(rank_log, paths.training_log)
    host = socket.gethostname()
    started = datetime.now(UTC)
    _write_metadata(paths, job, node, gpus, host, argv, started=started)
    paths.append_console(f"attempt {job.attempt} starting on {node} GPUs {gpus}: {argv}")

    def on_start(pid: int) -> None:
        rt.registry.start_attempt(
            job_id=job.id,
            number=job.attempt,
            node=node,
            host=host,
            gpu_indices=str(gpus),
            pid=pid,
            started_at=started,
        )
        rt.live.heartbeat(job.id, rt.settings.lease_ttl, node=node, pid=pid, attempt=job.attempt)

    def heartbeat() -> bool:
        if not rt.live.renew(node, gpus, holder, rt.settings.lease_ttl):
            return False
        rt.live.heartbeat(job.id, rt.settings.lease_ttl, node=node, attempt=job.attempt)
        return True

    control = RunControl(
        heartbeat=heartbeat,
        interval=rt.settings.heartbeat_interval,
        stop=stop,
        timeout=spec.timeout,
        grace=rt.settings.stop_grace,
        on_start=on_start,
    )
    info = run_command(
        argv, job_environment(rt, job, spec, paths, node, gpus), cwd, rank_log, control
    )
    _write_metadata(paths, job, node, gpus, host, argv, started=started, info=info)
    return info


def _write_metadata(
    paths: JobPaths,
    job: JobRow,
    node: str,
    gpus: list[int],
    host: str,
    argv: list[str],
    started: datetime,
    info: ExitInfo | None = None,
) -> None:
    data: dict[str, Any] = {
        "job_id": job.id,
        "name": job.name,
        "host": host,
        "node": node,
        "nodes": [node],
        "gpus": gpus,
        "cuda_visible_devices": ",".join(str(i) for i in gpus),
        "command": argv,
        "attempt": job.attempt,
        "distributed": False,
        "start": started.isoformat(),
        "end": None,
        "duration_s": None,
        "exit_code": None,
        "exit_signal": None,
        "exit_reason": None,
        "pid": None,
    }
    if info is not None:
        data.update(
            end=datetime.fromtimestamp(info.ended, UTC).isoformat(),
            duration_s=round(info.duration, 3),
            exit_code=info.code,
            exit_signal=info.signal,
            exit_reason=info.reason,
            error=info.error,
            pid=info.pid,
        )
    write_json_atomic(paths.metadata, data)


def _finish(
    rt: Runtime, job: JobRow, paths: JobPaths, node: str, gpus: list[int], info: ExitInfo
) -> None:
    ended = datetime.fromtimestamp(info.ended, UTC) if info.ended else utcnow()
    rt.registry.end_attempt(
        job.id,
        job.attempt,
        ended_at=ended,
        exit_code=info.code,
        exit_signal=info.signal,
        exit_reason=info.reason,
    )
    status = _OUTCOME.get(info.reason, JobStatus.FAILED)
    line = f"attempt {job.attempt} ended: {info.reason}"
    if info.error:
        line += f" - {info.error}"
    paths.append_console(line)
    if status is JobStatus.QUEUED:
        # The worker is shutting down: the job goes back to the queue, not lost.
        rt.transition(
            job.id,
            JobStatus.QUEUED,
            expect=[JobStatus.RUNNING],
            node=None,
            gpu_indices=None,
            exit_reason=info.reason,
            error=info.error,
        )
        rt.live.enqueue(job.id, job.priority, job.gpus, _spec_node(job))
        rt.registry.add_event("requeued", f"{job.id} requeued: {info.reason}", job.id, node)
        return
    rt.transition(
        job.id,
        status,
        expect=[JobStatus.RUNNING],
        finished_at=ended,
        exit_code=info.code,
        exit_signal=info.signal,
        exit_reason=info.reason,
        error=info.error,
    )
    if status is not JobStatus.FINISHED:
        rt.registry.add_event("job_failed", f"{job.id}: {line}", job.id, node)


def _spec_node(job: JobRow) -> str | None:
    return JobSpec.model_validate_json(job.spec).node
