"""One member of a gang job on a GPU worker: claim, meet the others, run, record.

A gang job's attempt has one member a node, each sent to its own worker with the
placement's lease token and its rank. A member claims its part in the registry
(``ugro.registry.members``), takes its lease into the running window, then waits
for every other member's claim: their addresses, in rank order, are what its
command needs to meet them (``MASTER_ADDR`` is rank 0's). One that has not come
within ``gang_start_timeout`` fails the attempt. From there each member runs as a
one-node job does, and stops also when its attempt is being stopped: a member
that ends badly, is lost or is cancelled stops the others
(``ugro.execution.gang_end``).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from ugro.errors import RegistryUnreachable
from ugro.execution.attempt import LeaseTaken, run_control
from ugro.execution.gang_end import (
    GangMember,
    end_member_run,
    gang_metadata,
    node_metadata,
    process_ranks,
)
from ugro.execution.job_env import ensure_task_tree, job_environment, per_gpu
from ugro.execution.rendezvous import gang_environment, master_port, node_address
from ugro.execution.runner import ExitInfo, run_command, stop_reason
from ugro.jobs.lifecycle import ExitReason, JobStatus
from ugro.jobs.paths import JobPaths
from ugro.jobs.redact import is_secret_name
from ugro.jobs.spec import JobSpec
from ugro.registry.members import MemberClaim, claim_member, members_of, start_member
from ugro.registry.models import MemberRow
from ugro.registry.outage import wait_out_outage
from ugro.runtime import Runtime, claim_values, gpu_json
from ugro.scheduling.dispatch import dispatch_pending

log = logging.getLogger(__name__)
# How often a member waiting for the others looks whether they came.
_MEET_POLL = 0.1


def run_member(
    rt: Runtime,
    job_id: str,
    token: str,
    node: str,
    gpus: list[int],
    rank: int,
    stop: threading.Event,
) -> str:
    """Run one member of a placed gang job on this worker; returns what happened."""
    claim = MemberClaim(rank, node, node_address(rt.settings), socket.gethostname(), gpu_json(gpus))
    job = wait_out_outage(
        lambda: claim_member(rt.registry, job_id, token, claim, claim_values()),
        f"the claim of job {job_id} rank {rank}",
        rt.settings.registry_wait,
    )
    if job is None:
        return "skipped: claimed already (a duplicate delivery), placed again since, or gone"
    member = GangMember(
        job,
        JobSpec.model_validate_json(job.spec),
        rank,
        node,
        gpus,
        claim.address,
        claim.host,
        f"{job_id}|{token}",
    )
    paths = rt.paths(job_id)
    try:
        ensure_task_tree(rt, job)
        info = _run(rt, member, paths, stop)
    except LeaseTaken as exc:
        now = time.time()
        info = ExitInfo(ExitReason.LOST, now, now, error=str(exc))
    except Exception as exc:  # the worker must survive whatever one job does
        log.exception("job %s rank %s failed in ugro itself", job_id, rank)
        now = time.time()
        info = ExitInfo(ExitReason.ERROR, now, now, error=f"ugro error: {exc}")
    try:
        wait_out_outage(
            lambda: end_member_run(rt, member, paths, info),
            f"the end of job {job_id} rank {rank}",
            rt.settings.registry_wait,
            meanwhile=lambda: rt.live.leases.renew(
                node, gpus, member.holder, rt.settings.lease_ttl, attempt=job.attempt
            ),
        )
    finally:
        rt.live.leases.release(node, gpus, member.holder)  # no leaked lease, whatever failed
    if not stop.is_set():
        dispatch_pending(rt)
    return f"rank {rank}: {info.reason} ({info.error or 'exit 0'})"


def _run(rt: Runtime, member: GangMember, paths: JobPaths, stop: threading.Event) -> ExitInfo:
    job, spec, node = member.job, member.spec, member.node
    if not rt.live.leases.renew(node, member.gpus, member.holder, rt.settings.lease_ttl):
        raise LeaseTaken(f"GPUs {member.gpus} of {node} were leased to another job")
    paths.append_node_console(
        node,
        f"attempt {job.attempt} rank {member.rank} claimed on {node} ({member.address})"
        f" GPUs {member.gpus}; waiting for {spec.nodes} members",
    )
    met = _meet(rt, member, stop)
    if isinstance(met, ExitInfo):
        return met
    addresses = [m.address for m in met]
    secrets = rt.live.secrets(job.id) if any(map(is_secret_name, spec.env)) else {}
    env = job_environment(job, spec, secrets, paths, node, member.gpus)
    port = master_port(job.id, job.attempt, rt.settings.master_port_range)
    env |= gang_environment(spec.nodes, member.rank, spec.gpus, addresses, port, spec.launch)
    command = spec.argv()
    member.ranks = process_ranks(member.rank, spec)
    paths.start_rank_logs(job.attempt, member.ranks)
    paths.name_rank_logs(job.attempt, member.ranks, node)
    if spec.launch == "gpu":
        argv = per_gpu(env, paths.rank_log_template(job.attempt), command, rt.settings)
        log_path = paths.node_console(node)  # the launcher's own lines
    else:
        argv = command
        log_path = paths.attempt_logs(job.attempt) / f"rank_{member.rank}.log"
    cwd = Path(spec.working_dir) if spec.working_dir else paths.root
    started = datetime.now(UTC)
    where = f"rank {member.rank} on {node} ({member.address}) GPUs {member.gpus}"

    def on_start(pid: int) -> None:
        start_member(rt.registry, job.id, job.attempt, member.rank, pid, started)
        if member.rank == 0:
            rt.live.set_job(job.id, status=JobStatus.RUNNING.value, started=time.time())
            paths.write_metadata(gang_metadata(job, spec, met, None))
        paths.write_node_metadata(node, node_metadata(member, command, started, pid=pid))
        line = f"attempt {job.attempt} {where} started: {command} (pid {pid})"
        paths.append_node_console(node, line)
        paths.append_console(line)

    def renew() -> bool:
        return rt.live.leases.renew(
            node, member.gpus, member.holder, rt.settings.lease_ttl, attempt=job.attempt
        )

    control, watch = run_control(
        rt,
        spec,
        stop,
        renew,
        lambda: rt.live.stops.member_stop_requested(job.id, job.attempt, rt.settings.stop_grace),
        on_start,
    )
    try:
        info = run_command(argv, env, cwd, log_path, control)
    finally:
        watch.stop()
    paths.write_node_metadata(node, node_metadata(member, command, started, info=info))
    return info


def _meet(rt: Runtime, member: GangMember, stop: threading.Event) -> list[MemberRow] | ExitInfo:
    """Wait for every member's claim; the members in rank order, or how the wait
    ended without them (stopped, cancelled, the worker shutting down, or the start
    timeout: the attempt fails as lost)."""
    job, settings = member.job, rt.settings
    began = time.time()
    deadline = time.monotonic() + settings.gang_start_timeout
    next_beat = time.monotonic() + settings.heartbeat_interval
    away = False  # the registry did not answer a look (said once in the log)
    while True:
        try:
            members = members_of(rt.registry, job.id, job.attempt)
        except RegistryUnreachable as exc:  # looked at again at the next poll
            if not away:
                log.warning("job %s rank %s waits for the registry: %s", job.id, member.rank, exc)
            away, members = True, []
        if len(members) >= member.spec.nodes:
            return members
        asked = rt.live.stops.member_stop_requested(job.id, job.attempt, settings.stop_grace)
        now = time.monotonic()
        reason: ExitReason | None = None
        error = None
        if asked is not None:
            reason = stop_reason(asked[1])
            error = f"stopped by ugro before its start: {reason}"
        elif stop.is_set():
            reason, error = ExitReason.INTERRUPTED, "its worker shut down before the start"
        elif now >= deadline:
            missing = sorted(set(range(member.spec.nodes)) - {m.rank for m in members})
            reason = ExitReason.LOST
            error = (
                f"rank {', '.join(map(str, missing))} did not start within"
                f" {settings.gang_start_timeout:g} s"
            )
        if reason is not None:
            return ExitInfo(reason, began, time.time(), error=error)
        if now >= next_beat:
            next_beat = now + settings.heartbeat_interval
            if not rt.live.leases.renew(
                member.node, member.gpus, member.holder, settings.lease_ttl, attempt=job.attempt
            ):
                raise LeaseTaken(f"GPUs {member.gpus} of {member.node} were leased to another job")
        stop.wait(_MEET_POLL)
