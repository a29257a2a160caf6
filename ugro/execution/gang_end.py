"""How a gang job's attempt ends: each member's end, the stop of the others, and the
attempt's end once the last member's is recorded.

A member that ends badly (an error, a timeout, out of memory, cancelled, lost)
asks the others to stop (``StopRequests.stop_gang``): they end ``stopped``. The
member whose end leaves none running finalises the attempt (the registry says
which, ``ugro.registry.members.end_member``): the attempt ends with the first
bad end's reason, its duration is the longest member's wall time, and the job
goes on as a one-node job's attempt would (finished, retried, failed), through
the same ``record_end``. A member whose node stopped answering is ended lost by
the reconciler (``declare_member_lost``), which then finalises when it is last.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ugro.execution.attempt_end import end_line, ended_fields, record_end
from ugro.execution.runner import ExitInfo
from ugro.jobs.lifecycle import ExitReason
from ugro.jobs.paths import JobPaths
from ugro.jobs.spec import JobSpec
from ugro.registry.members import end_member
from ugro.registry.models import JobRow, MemberRow
from ugro.runtime import Runtime
from ugro.transport.queues import node_queue

# Ends that are no reason for the attempt's end: a member that finished, or one
# stopped because another ended first.
_NOT_A_CAUSE = frozenset({ExitReason.OK.value, ExitReason.STOPPED.value})


@dataclass
class GangMember:
    """One member of a gang job's attempt, as its worker runs it."""

    job: JobRow  # as claimed: running, its attempt counted
    spec: JobSpec
    rank: int  # the node rank
    node: str
    gpus: list[int]
    address: str
    host: str
    holder: str  # its lease's holder, "<job_id>|<token>"
    ranks: list[int] = field(default_factory=list)  # its processes' global ranks


def process_ranks(node_rank: int, spec: JobSpec) -> list[int]:
    """The global ranks of the processes a member runs: its node rank when it runs
    one process (torchrun numbers its own), one a GPU otherwise."""
    if spec.launch == "gpu":
        return list(range(node_rank * spec.gpus, (node_rank + 1) * spec.gpus))
    return [node_rank]


def end_member_run(rt: Runtime, member: GangMember, paths: JobPaths, info: ExitInfo) -> None:
    """Record a member's end on its worker: stop the others when it ended badly,
    and finalise the attempt when it is the last."""
    job = member.job
    failed = info.reason not in _NOT_A_CAUSE
    if failed:
        why = {"rank": member.rank, "node": member.node, "reason": info.reason, "error": info.error}
        rt.live.stops.stop_gang(job.id, job.attempt, why)
    stopped = failed or rt.live.stops.gang_stopped(job.id, job.attempt) is not None
    line = f"attempt {job.attempt} rank {member.rank} on {member.node} ended: {info.reason}"
    if info.error:
        line += f" - {info.error}"
    paths.append_node_console(member.node, line)
    paths.append_console(line)
    values = {
        "ended_at": datetime.fromtimestamp(info.ended, UTC),
        "exit_code": info.code,
        "exit_signal": info.signal,
        "exit_reason": info.reason.value,
        "error": info.error,
    }
    end = end_member(
        rt.registry, job.id, job.attempt, member.rank, values, member.spec.nodes, stopped
    )
    if end.finalise:
        finish_gang(rt, job, member.spec, paths, end.members)


def declare_member_lost(
    rt: Runtime, job: JobRow, spec: JobSpec, member: MemberRow, error: str | None = None
) -> None:
    """A member whose worker stopped renewing its lease (or died, ``error`` says
    how): fence the attempt (its worker may not take a lease of it again), stop the
    others, record the member lost, and finalise the attempt when it was the last
    running."""
    if error is None:
        error = f"no heartbeat from node {member.node} for more than {rt.settings.lease_ttl:g} s"
    rt.live.leases.fence(job.id, job.attempt)
    why = {"rank": member.rank, "node": member.node, "reason": ExitReason.LOST, "error": error}
    rt.live.stops.stop_gang(job.id, job.attempt, why)
    values = {"ended_at": datetime.now(UTC), "exit_reason": ExitReason.LOST.value, "error": error}
    paths = rt.paths(job.id)
    line = f"attempt {job.attempt} rank {member.rank} on {member.node} lost: {error}"
    paths.append_console(line)
    paths.append_node_console(member.node, line)
    rt.registry.add_event(
        "member_lost", f"{job.id} rank {member.rank}: {error}", job.id, member.node
    )
    # Its processes may still run there: its node's agent stops them when it can.
    rt.app.send_task("ugro.kill_orphans", queue=node_queue(rt.settings, member.node))
    end = end_member(rt.registry, job.id, job.attempt, member.rank, values, spec.nodes, True)
    if end.finalise:
        finish_gang(rt, job, spec, paths, end.members)


def finish_gang(
    rt: Runtime, job: JobRow, spec: JobSpec, paths: JobPaths, members: list[MemberRow]
) -> None:
    """The attempt's end, once every member's is recorded: its metadata, its row in
    the attempts, and the job's next status."""
    info = gang_outcome(members, spec.nodes)
    first = members[0] if members and members[0].rank == 0 else None
    rt.registry.start_attempt(
        job_id=job.id,
        number=job.attempt,
        node=first.node if first else job.node or "",
        host=first.host if first else "",
        gpu_indices=first.gpu_indices if first else job.gpu_indices or "[]",
        pid=None,
        started_at=datetime.fromtimestamp(info.started, UTC),
    )
    paths.write_metadata(gang_metadata(job, spec, members, info))
    paths.append_console(end_line(job, info))
    record_end(rt, job, spec, paths, job.node or "", info, None, None)


def gang_outcome(members: list[MemberRow], num_nodes: int) -> ExitInfo:
    """The attempt's end from its members': the first bad end's reason (a cancel's
    first of all), else ok when every member finished."""
    starts = [m.started_at or m.claimed_at for m in members]
    ends = [m.ended_at for m in members if m.ended_at is not None]
    started = min(starts).timestamp() if starts else 0.0
    ended = max(ends).timestamp() if ends else started
    bad = sorted(
        (m for m in members if m.exit_reason not in _NOT_A_CAUSE),
        key=lambda m: (m.exit_reason != ExitReason.CANCELLED, m.ended_at or datetime.max),
    )
    if not bad:
        if len(members) == num_nodes and all(m.exit_reason == ExitReason.OK for m in members):
            return ExitInfo(ExitReason.OK, started, ended, 0)
        return ExitInfo(ExitReason.LOST, started, ended, error="stopped before every member ended")
    cause = bad[0]
    reason = ExitReason(cause.exit_reason or ExitReason.LOST)
    # A command that could not start on one node would not on the others either.
    deterministic = reason == ExitReason.ERROR and cause.pid is None and cause.exit_code == 127
    error = f"rank {cause.rank} on {cause.node}: {cause.error or reason}"
    return ExitInfo(
        reason, started, ended, cause.exit_code, cause.exit_signal, None, error, deterministic
    )


def _stamp(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _wall_time(member: MemberRow) -> float | None:
    if member.started_at is None or member.ended_at is None:
        return None
    return round((member.ended_at - member.started_at).total_seconds(), 3)


def gang_metadata(
    job: JobRow, spec: JobSpec, members: list[MemberRow], info: ExitInfo | None
) -> dict[str, Any]:
    """The top ``metadata.json`` of a gang job's attempt (``info``: its end, once
    finalised; None while it runs)."""
    first = members[0] if members else None
    nodes = [
        {
            "node": m.node,
            "address": m.address,
            "host": m.host or None,
            "rank": m.rank,
            "gpus": json.loads(m.gpu_indices),
            "ranks": process_ranks(m.rank, spec),
            "start": _stamp(m.started_at),
            "end": _stamp(m.ended_at),
            "duration_s": _wall_time(m),
            "exit_code": m.exit_code,
            "exit_signal": m.exit_signal,
            "exit_reason": m.exit_reason,
            "error": m.error,
            "pid": m.pid,
        }
        for m in members
    ]
    walls = [wall for m in members if (wall := _wall_time(m)) is not None]
    starts = [m.started_at for m in members if m.started_at is not None]
    return {
        "job_id": job.id,
        "name": job.name,
        "host": first.host if first else None,
        "node": first.node if first else job.node,
        "nodes": nodes,
        "launch": spec.launch,
        "num_nodes": spec.nodes,
        "gpus_per_node": spec.gpus,
        "command": spec.argv(),
        "attempt": job.attempt,
        "distributed": True,
        "start": _stamp(min(starts)) if starts else None,
        "end": None if info is None else datetime.fromtimestamp(info.ended, UTC).isoformat(),
        # The run's wall time is its longest member's.
        "duration_s": max(walls) if info is not None and walls else None,
        "exit_code": None if info is None else info.code,
        "exit_signal": None if info is None else info.signal,
        "exit_reason": None if info is None else info.reason.value,
        "error": None if info is None else info.error,
    }


def node_metadata(
    member: GangMember,
    command: list[str],
    started: datetime,
    pid: int | None = None,
    info: ExitInfo | None = None,
) -> dict[str, Any]:
    """``nodes/<node>/metadata.json``: one member's start, then its end."""
    job, spec = member.job, member.spec
    data: dict[str, Any] = {
        "job_id": job.id,
        "name": job.name,
        "attempt": job.attempt,
        "node": member.node,
        "address": member.address,
        "host": member.host,
        "rank": member.rank,
        "num_nodes": spec.nodes,
        "gpus": member.gpus,
        "cuda_visible_devices": ",".join(map(str, member.gpus)),
        "command": command,
        "launch": spec.launch,
        "ranks": member.ranks,
        "distributed": True,
        "start": started.isoformat(),
        **ended_fields(info, pid),
    }
    return data
