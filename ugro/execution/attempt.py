"""One attempt of a job on a GPU worker: claim, run, record, release.

The claim (placed -> running, attempt + 1, compare-and-set in the registry) comes
before anything runs, so a duplicate delivery of the same message runs nothing.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ugro.errors import RegistryUnreachable
from ugro.execution.attempt_end import end_line, ended_fields, record_end
from ugro.execution.job_env import ensure_task_tree, job_environment, per_gpu
from ugro.execution.job_watch import JobWatch, StopAsked
from ugro.execution.rendezvous import gang_environment, master_port, node_address
from ugro.execution.runner import ExitInfo, RunControl, run_command
from ugro.jobs.disk import is_no_room, write_failure
from ugro.jobs.lifecycle import ExitReason, JobStatus
from ugro.jobs.paths import JobPaths
from ugro.jobs.redact import is_secret_name
from ugro.jobs.spec import JobSpec
from ugro.registry.models import JobRow
from ugro.registry.outage import wait_out_outage
from ugro.runtime import Runtime, claim_values, gpu_json
from ugro.scheduling.dispatch import ClaimedJob, WorkerGpu, dispatch_pending

log = logging.getLogger(__name__)


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
        ensure_task_tree(rt, job)
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
    own_gpu = WorkerGpu(node, gpus[0], freed=len(gpus))
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
