"""A GPU worker that died on a healthy node: its attempt is lost now, not when
its lease runs out.

The node's supervisor is the worker's parent: it sees the death the moment it
happens and runs this (``workers.gpu_lost``) before it starts the worker again.
The job whose lease that GPU holds, running there, is fenced (its worker may not
come back to it), its processes on this node are stopped (they are the
supervisor's now: nobody else watches them), and the attempt is declared lost as
the reconciler would, its retry policy deciding what follows; its GPUs are let go
at once. When the supervisor is gone too, lease expiry and the reconciler stay
the safety net.
"""

from __future__ import annotations

import logging

from ugro.execution.gang_end import declare_member_lost
from ugro.execution.processes import JobTag, job_processes, terminate
from ugro.execution.reconcile import declare_lost
from ugro.jobs.lifecycle import JobStatus
from ugro.jobs.spec import JobSpec
from ugro.registry.members import members_of
from ugro.registry.models import placement_of
from ugro.runtime import Runtime
from ugro.scheduling.dispatch import dispatch_pending

log = logging.getLogger(__name__)
# How long a lost attempt's processes get between SIGTERM and SIGKILL: a job
# saving a checkpoint on SIGTERM may, but its GPUs are wanted back soon.
_KILL_GRACE = 2.0


def declare_worker_lost(rt: Runtime, node: str, index: int) -> str | None:
    """The GPU worker of ``index`` on ``node`` died: declare the attempt it ran
    lost; returns the job's id, or None when it ran none."""
    holder = rt.live.leases.lease_holders(node, [index])[index]
    if holder is None:
        return None
    job_id = holder.partition("|")[0]
    row = rt.registry.get_job(job_id)
    gpus = dict(placement_of(row)).get(node, [])
    if row.status != JobStatus.RUNNING.value or index not in gpus:
        return None  # placed and never claimed: its placement's lease runs out
    rt.live.leases.fence(row.id, row.attempt)
    # (the supervisor's children now: it reaps them)
    terminate(job_processes(None, JobTag(row.id, node)), min(_KILL_GRACE, rt.settings.stop_grace))
    error = f"its GPU worker on {node} (GPU {index}) died"
    if row.members:
        spec = JobSpec.model_validate_json(row.spec)
        for member in members_of(rt.registry, row.id, row.attempt):
            if member.node == node and member.ended_at is None:
                declare_member_lost(rt, row, spec, member, error)
    else:
        declare_lost(rt, row, error)
    rt.live.leases.release_job(row.id, node, gpus)
    dispatch_pending(rt)
    return row.id
