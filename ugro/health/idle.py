"""Idle GPUs that are held: a GPU leased to a running job that does no work.

The check runs in beat's health sweep, on what it already has in hand: each
node agent's reading names, for every GPU, its utilisation and the job holding
its lease at that one moment, and the previous sweep's sample of the node is
read anyway. A GPU's sample carries since when it reads idle (under
``UGRO_IDLE_GPU_PERCENT``) for the same job, taken over from the previous
sample; so the check costs no Redis command and no registry read while nothing
is flagged, keeps its count through an agent's restart, and sees every node
from one place. Once a GPU has read idle for ``UGRO_IDLE_GPU_AFTER``, the job is
flagged once for it: an event, a line in its console, and (``on_idle="stop"``)
a request to stop it with reason ``idle``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from ugro.errors import UgroError
from ugro.health.samples import GpuSample, NodeSample
from ugro.jobs.spec import JobSpec
from ugro.runtime import Runtime

log = logging.getLogger(__name__)


def idle_fields(
    previous: Mapping[str, Any] | None,
    job: str | None,
    utilization: float | None,
    at: float,
    percent: float,
    after: float,
) -> dict[str, Any]:
    """A GPU's ``idle_since`` and ``held_idle`` (``GpuSample``) as read at ``at``.

    Args:
        previous: the GPU in the node's previous sample (``GpuSample`` as a dict).
        job: the job holding the GPU's lease when it was read (None: free).
        utilization: percent, as read (None: not read).
        at: when it was read.
        percent: under this utilisation the GPU is idle.
        after: held idle this long, it is flagged.
    """
    if job is None or utilization is None or utilization >= percent:
        return {"idle_since": None, "held_idle": False}
    since = at
    if previous and previous.get("job") == job and previous.get("idle_since") is not None:
        since = float(previous["idle_since"])
    return {"idle_since": since, "held_idle": at - since >= after}


def newly_idle(sample: NodeSample, previous: Mapping[str, Any] | None) -> list[GpuSample]:
    """The GPUs of ``sample`` held idle long enough that the previous sample had
    not flagged yet: each idle stretch is flagged once."""
    before: dict[int, Mapping[str, Any]] = {}
    if previous:
        before = {int(gpu["index"]): gpu for gpu in previous.get("gpus") or []}
    found = []
    for gpu in sample.gpus:
        if not gpu.held_idle:
            continue
        old = before.get(gpu.index)
        flagged = (
            old is not None
            and bool(old.get("held_idle"))
            and old.get("job") == gpu.job
            and old.get("idle_since") == gpu.idle_since
        )
        if not flagged:
            found.append(gpu)
    return found


def flag_idle(rt: Runtime, sample: NodeSample, gpus: list[GpuSample]) -> None:
    """Tell of each GPU held idle: an event, the job's console, and the stop of a
    job submitted with ``on_idle="stop"``."""
    s = rt.settings
    for gpu in gpus:
        job = gpu.job
        if job is None:
            continue
        minutes = (sample.at.timestamp() - (gpu.idle_since or 0.0)) / 60
        what = (
            f"GPU {sample.node}:{gpu.index} held idle: under {s.idle_gpu_percent:g} %"
            f" utilisation for {minutes:.1f} min"
        )
        stop = _stops_when_idle(rt, job)
        if stop:
            rt.live.stops.request_cancel(job, s.stop_grace, reason="idle")
            what += "; stopping it (on_idle=stop)"
        log.warning("job %s: %s", job, what)
        rt.registry.add_event("gpu_idle", f"{job}: {what}", job, sample.node)
        with contextlib.suppress(OSError, UgroError):  # the event says it too
            rt.paths(job).append_console(what)


def _stops_when_idle(rt: Runtime, job_id: str) -> bool:
    try:
        row = rt.registry.get_job(job_id)
        return JobSpec.model_validate_json(row.spec).on_idle == "stop"
    except (UgroError, ValueError):  # gone meanwhile, or a spec of another version
        return False
