"""One attempt of a job on a GPU worker: claim, run, record, release.

The claim (placed -> running, attempt + 1, compare-and-set in the registry) comes
before anything runs, so a duplicate delivery of the same message runs nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ugro.errors import RegistryUnreachable
from ugro.execution.job_watch import JobWatch, StopAsked
from ugro.execution.outcome import requeue, settle_failure
from ugro.execution.rendezvous import gang_environment, master_port, node_address
from ugro.execution.runner import ExitInfo, RunControl, run_command
from ugro.jobs.disk import is_no_room, write_failure
from ugro.jobs.lifecycle import ExitReason, JobStatus
from ugro.jobs.paths import JobPaths
from ugro.jobs.redact import is_secret_name
from ugro.jobs.spec import JobSpec
from ugro.live.writes import Writes
from ugro.progress.jobs import final_progress
from ugro.registry.models import JobRow
from ugro.registry.outage import wait_out_outage
from ugro.runtime import Runtime, claim_values, gpu_json
from ugro.scheduling.dispatch import ClaimedJob, WorkerGpu, dispatch_pending
from ugro.settings import Settings

log = logging.getLogger(__name__)
# The bin folder of the virtualenv ugro runs from (None outside one): first on a
# job's PATH, so that its bare `python` is the one with ugro installed, as in an
# activated shell, whether or not the shell that ran `ugro up` had activated it.
_VENV_BIN = str(Path(sys.executable).parent) if sys.prefix != sys.base_prefix else None


def run_attempt(
    rt: Runtime, job_id: str, token: str, node: str, gpus: list[int], stop: threading.Event
) -> str:
    """Run a placed job to its end on this worker, then each job that dispatch, as
    it ended, placed on this worker's GPU and claimed for it (see ``WorkerGpu``);
    returns what happened, for logs."""
    outcomes: list[str] = []
    # The claim names the placement's lease token: a message of an earlier placement
    # of the job, or a second delivery of this one, claims nothing.
    job = wait_out_outage(
        lambda: rt.claim(job_id, expect=[JobStatus.PLACED], token=token, **claim_values()),
        f"the claim of job {job_id}",
        rt.settings.registry_wait,
    )
    if job is None:
        why = "claimed already (a duplicate delivery), placed again since, or gone"
        return f"skipped: {why}"
    following: ClaimedJob | None = ClaimedJob(job, token, gpus)
    while following is not None:
        job, token, gpus = following
        outcome, following = _run_one(rt, job, token, node, gpus, stop, mirrored=bool(outcomes))
        outcomes.append(outcome if not outcomes else f"then {job.id}: {outcome}")
    return "; ".join(outcomes)


def _run_one(
    rt: Runtime,
    job: JobRow,
    token: str,
    node: str,
    gpus: list[int],
    stop: threading.Event,
    mirrored: bool,
) -> tuple[str, ClaimedJob | None]:
    """One attempt of a claimed job (``mirrored``: Redis shows it running already);
    returns what happened and the job claimed here next, if any."""
    holder = f"{job.id}|{token}"
    paths = rt.paths(job.id)
    spec: JobSpec | None = None  # parsed once, for the run and for its final progress
    try:
        spec = JobSpec.model_validate_json(job.spec)
        info = _execute(rt, job, spec, paths, node, gpus, holder, stop, mirrored)
    except LeaseTaken as exc:
        now = time.time()
        info = ExitInfo(ExitReason.LOST, now, now, error=str(exc))
    except Exception as exc:  # the worker must survive whatever one job does
        now = time.time()
        if is_no_room(exc):  # its folder could not be written: no room for the job either
            log.warning("job %s: its folder's filesystem is full: %s", job.id, exc)
            info = ExitInfo(ExitReason.DISK_FULL, now, now, error=write_failure(paths.root, exc))
        else:
            log.exception("job %s failed in ugro itself", job.id)
            info = ExitInfo(ExitReason.ERROR, now, now, error=f"ugro error: {exc}")
    outcome = f"{info.reason} ({info.error or 'exit 0'})"
    own_gpu = WorkerGpu(node, gpus[0])
    # The end's Redis writes (the lease let go, the status) go with the dispatch
    # pass's first round trip: the freed GPU is the pass's before anyone else sees it.
    writes = rt.live.redis.pipeline(transaction=True)
    try:
        try:
            paths.append_console(end_line(job, info))
        except OSError as exc:  # a full tree must not keep the end from the registry
            log.warning("job %s: %s (not in its console.log: %s)", job.id, end_line(job, info), exc)
        wait_out_outage(
            lambda: record_end(rt, job, spec, paths, node, info, (node, gpus, holder), writes),
            f"the end of job {job.id} attempt {job.attempt}",
            rt.settings.registry_wait,
            # (kept while the end waits: a running job without it is a lost one)
            meanwhile=lambda: rt.live.leases.renew(
                node, gpus, holder, rt.settings.lease_ttl, attempt=job.attempt
            ),
        )
        if stop.is_set():  # a worker on its way out hands out no more work
            writes.execute()
            return outcome, None
        try:
            dispatch_pending(rt, own_gpu, writes)
        except RegistryUnreachable:
            writes.execute()  # (the end's own writes; beat's dispatch places later)
            return outcome, None
    except BaseException:
        rt.live.leases.release(node, gpus, holder)  # no leaked lease, whatever failed
        raise
    return outcome, own_gpu.claimed


def newest_checkpoint(checkpoints: Path) -> Path | None:
    """The most recently written file under ``checkpoints/``, if any."""
    newest: tuple[float, Path] | None = None
    for path in checkpoints.rglob("*"):
        try:
            if path.is_file() and not path.name.startswith("."):
                stamp = path.stat().st_mtime
                if newest is None or stamp > newest[0]:
                    newest = (stamp, path)
        except OSError:
            continue
    return newest[1] if newest else None


def job_environment(
    job: JobRow,
    spec: JobSpec,
    secrets: dict[str, str],
    paths: JobPaths,
    node: str,
    gpus: list[int],
) -> dict[str, str]:
    env = dict(os.environ)
    if _VENV_BIN is not None:
        path = env.get("PATH", os.defpath)
        if not path.startswith(_VENV_BIN + os.pathsep):
            env["PATH"] = _VENV_BIN + os.pathsep + path
    env.update(spec.env)
    env.update(secrets)
    env.update(
        {
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",  # indices as nvidia-smi shows them
            "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in gpus),
            "UGRO_JOB_ID": job.id,  # also the tag that finds every process of the job
            "UGRO_JOB_NAME": job.name,
            "UGRO_JOB_DIR": str(paths.root),
            "UGRO_CHECKPOINT_DIR": str(paths.checkpoints),
            "UGRO_TENSORBOARD_DIR": str(paths.tensorboard),
            "UGRO_ATTEMPT": str(job.attempt),
            "UGRO_NODE": node,
            "PYTHONUNBUFFERED": "1",  # a Python job's prints reach the log as they happen
        }
    )
    env.pop("UGRO_RESUME_FROM", None)
    if job.attempt > 1 and (resume := newest_checkpoint(paths.checkpoints)) is not None:
        env["UGRO_RESUME_FROM"] = str(resume)
    return env


class LeaseTaken(Exception):
    """A claimed job's GPU lease is another's: the job must not run there."""


def _execute(
    rt: Runtime,
    job: JobRow,
    spec: JobSpec,
    paths: JobPaths,
    node: str,
    gpus: list[int],
    holder: str,
    stop: threading.Event,
    mirrored: bool,
) -> ExitInfo:
    # The registry keeps a secret's name, redacted; its value is in Redis only.
    secrets = rt.live.secrets(job.id) if any(map(is_secret_name, spec.env)) else {}
    argv = command = spec.argv()
    cwd = Path(spec.working_dir) if spec.working_dir else paths.root
    rank_log = paths.start_attempt_logs(job.attempt)
    host = socket.gethostname()
    started = datetime.now(UTC)
    env = job_environment(job, spec, secrets, paths, node, gpus)
    ranks = [0]
    if spec.launch == "gpu":
        # One process a GPU, through the launcher, whose own lines go to the console.
        address = node_address(rt.settings)
        port = master_port(job.id, job.attempt, rt.settings.master_port_range)
        env |= gang_environment(1, 0, len(gpus), [address], port, spec.launch)
        ranks = list(range(len(gpus)))
        paths.start_rank_logs(job.attempt, ranks)
        argv = per_gpu(env, paths.rank_log_template(job.attempt), command, rt.settings)
        rank_log = paths.console
    resume = f", resuming from {env['UGRO_RESUME_FROM']}" if "UGRO_RESUME_FROM" in env else ""

    def renew() -> bool:
        held = rt.live.leases.renew(node, gpus, holder, rt.settings.lease_ttl, attempt=job.attempt)
        if held:
            rt.live.heartbeat(job.id, rt.settings.lease_ttl, node=node, attempt=job.attempt)
        return held

    def on_start(pid: int) -> None:
        # The bookkeeping of the start follows the start, off the job's critical
        # path; should any of it fail, the runner stops the job.
        if not mirrored and not rt.mark_running(job, (node, gpus, holder)):
            raise LeaseTaken(f"GPUs {gpus} of {node} were leased to another job")
        paths.name_rank_logs(job.attempt, ranks)
        wait_out_outage(
            lambda: rt.registry.start_attempt(
                job_id=job.id,
                number=job.attempt,
                node=node,
                host=host,
                gpu_indices=gpu_json(gpus),
                pid=pid,
                started_at=started,
            ),
            f"the start of job {job.id} attempt {job.attempt}",
            rt.settings.registry_wait,
            meanwhile=renew,
        )
        _write_metadata(paths, job, node, gpus, host, command, started=started, pid=pid)
        paths.append_console(
            f"attempt {job.attempt} started on {node} GPUs {gpus}{resume}: {command} (pid {pid})"
        )

    control, watch = run_control(
        rt, spec, stop, renew, lambda: rt.live.stops.cancel_requested(job.id), on_start
    )
    try:
        info = run_command(argv, env, cwd, rank_log, control)
    finally:
        watch.stop()
    try:
        if info.pid is None:  # never started: its log, which says why, gets its names here
            paths.name_rank_logs(job.attempt, ranks)
        _write_metadata(paths, job, node, gpus, host, command, started=started, info=info)
    except OSError as exc:
        # The end must still reach the registry. A full (or failing) tree keeps the
        # start's metadata.json, whole: it is written atomically.
        log.warning("job %s: its end is not in its folder: %s", job.id, exc)
    return info


def per_gpu(
    env: dict[str, str], template: Path, command: list[str], settings: Settings
) -> list[str]:
    """The launcher's argv that runs ``command`` once a GPU (``ugro.execution.per_gpu``),
    each rank's output in ``template`` with its rank; ``env`` gets its grace."""
    env["UGRO_STOP_GRACE"] = str(settings.stop_grace)
    return [sys.executable, "-m", "ugro.execution.per_gpu", "--logs", str(template), "--", *command]


def _write_metadata(
    paths: JobPaths,
    job: JobRow,
    node: str,
    gpus: list[int],
    host: str,
    argv: list[str],
    started: datetime,
    info: ExitInfo | None = None,
    pid: int | None = None,
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
        **ended_fields(info, pid),
    }
    paths.write_metadata(data)


def ended_fields(info: ExitInfo | None, pid: int | None = None) -> dict[str, Any]:
    """What a run's metadata says of its end (``info``; None: it runs, as ``pid``)."""
    if info is None:
        none = ("end", "duration_s", "exit_code", "exit_signal", "exit_reason", "error")
        return dict.fromkeys(none) | {"pid": pid}
    return {
        "end": datetime.fromtimestamp(info.ended, UTC).isoformat(),
        "duration_s": round(info.duration, 3),
        "exit_code": info.code,
        "exit_signal": info.signal,
        "exit_reason": info.reason.value,
        "error": info.error,
        "pid": info.pid,
    }


def run_control(
    rt: Runtime,
    spec: JobSpec,
    stop: threading.Event,
    renew: Callable[[], bool],
    stop_asked: StopAsked,
    on_start: Callable[[int], None],
) -> tuple[RunControl, JobWatch]:
    """What the runner checks while a job runs, with the settings' timings, and the
    watch that learns it from Redis once the job has started (``renew`` its lease,
    ``stop_asked`` for a stop request); the caller stops the watch at the end."""
    settings = rt.settings
    watch = JobWatch(renew, stop_asked, settings.heartbeat_interval, settings.fence_after)

    def started(pid: int) -> None:
        on_start(pid)
        watch.start()

    control = RunControl(
        heartbeat=watch.holds_lease,
        interval=settings.heartbeat_interval,
        stop=stop,
        timeout=spec.timeout,
        grace=settings.stop_grace,
        cancelled=watch.stop_asked,
        on_start=started,
        # A job whose lease is lost must be gone before the lease runs out.
        lost_grace=min(settings.stop_grace, max(0.0, settings.lease_ttl - settings.fence_after)),
    )
    return control, watch


def end_line(job: JobRow, info: ExitInfo) -> str:
    """The console's line of an attempt's end."""
    line = f"attempt {job.attempt} ended: {info.reason}"
    return f"{line} - {info.error}" if info.error else line


def record_end(
    rt: Runtime,
    job: JobRow,
    spec: JobSpec | None,
    paths: JobPaths,
    node: str,
    info: ExitInfo,
    lease: tuple[str, list[int], str] | None,
    writes: Writes | None,
) -> None:
    """Record the attempt's end and the job's next status; release its leases
    (``lease``: node, GPUs, holder; the job's processes are gone by now; None: a
    gang job's, each member let its own go). Those Redis writes of an attempt
    that ended well or was cancelled are left in ``writes`` for the caller to
    execute."""
    ended = datetime.fromtimestamp(info.ended, UTC)
    attempt: dict[str, Any] = {
        "ended_at": ended,
        "exit_code": info.code,
        "exit_signal": info.signal,
        "exit_reason": info.reason,
    }
    running = [JobStatus.RUNNING]
    outcome: dict[str, Any] = {
        "exit_code": info.code,
        "exit_signal": info.signal,
        "exit_reason": info.reason,
        "error": info.error,
        "progress": final_progress(rt, job, ok=info.reason == "ok", spec=spec),
    }
    ending = {"ok": JobStatus.FINISHED, "cancelled": JobStatus.CANCELLED}.get(info.reason)
    if ending is not None:
        # The attempt's end and the job's status in one commit. "stuck" is
        # retried below; "cancelled" is by a person.
        rt.end_attempt(
            job.id,
            job.attempt,
            attempt,
            ending,
            expect=running,
            release=lease,
            writes=writes,
            finished_at=ended,
            **outcome,
        )
        if ending is JobStatus.CANCELLED:
            rt.registry.add_event("job_cancelled", f"{job.id} cancelled", job.id, node)
        return
    # The retry policy counts the attempts that ended: record this one first. The
    # lease goes last: a running job without its lease is a lost one to the
    # reconciler (the worker's own dispatch pass, next, sees the GPUs free).
    rt.registry.end_attempt(job, **attempt)
    release = lease is not None
    try:
        if info.reason == "interrupted":
            # The worker is shutting down: the job goes back to the queue, not lost.
            requeue(rt, job, running, "its worker shut down", **outcome)
        else:
            settle_failure(
                rt,
                job,
                running,
                info.reason,
                info.error,
                ended,
                info.code,
                info.signal,
                info.deterministic,
                outcome["progress"],
            )
    except RegistryUnreachable:
        release = False  # kept while the end waits for the registry (see _run_one)
        raise
    finally:
        if release and lease is not None:
            rt.live.leases.release(*lease)
