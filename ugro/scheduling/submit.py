"""Submitting: each spec checked against the live nodes, then the jobs' trees, their
registry rows and their place in the live queue, all or nothing."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from secrets import token_hex
from typing import Any

import redis

from ugro.errors import DataDirError, SpecError
from ugro.jobs.dependencies import HOLD_AFTER
from ugro.jobs.disk import write_failure
from ugro.jobs.lifecycle import JobStatus
from ugro.jobs.paths import JobPaths
from ugro.jobs.redact import redact_env, split_secrets
from ugro.jobs.spec import JobSpec, new_job_id
from ugro.live.state import QueuedEntry
from ugro.registry.models import JobRow, job_from, utcnow
from ugro.runtime import Runtime, gpu_json
from ugro.scheduling.dispatch import WINDOW, dispatch_pending
from ugro.scheduling.new_array import NewArray
from ugro.scheduling.placement import PendingJob, Placement
from ugro.scheduling.sharing import check_submit, sharing_policy
from ugro.scheduling.submit_lease import SubmitLease
from ugro.scheduling.workflow import holds_of, job_ended, release_slots, resolve, settle

# How long submit trusts what it read of the live nodes, in seconds. A job that
# fits is accepted on that; one that does not is checked again before refusing.
_NODES_FRESH = 1.0


class LiveNodes:
    """The live nodes, as far as submit needs them: how many GPU workers each has up."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        # (when, live GPU workers per node): what submit checks a spec against.
        self._seen: tuple[float, dict[str, int]] | None = None

    def check_fits(self, spec: JobSpec) -> None:
        per_node = self._gpus_per_node(fresh=False)
        fits = _fit_error(spec, per_node) is None
        if not fits:  # look again before refusing: a node may have come up since
            per_node = self._gpus_per_node(fresh=True)
        if (error := _fit_error(spec, per_node)) is not None:
            raise SpecError(error)

    def _gpus_per_node(self, fresh: bool) -> dict[str, int]:
        """Live GPU workers per node, read at most once a second (``fresh``: now)."""
        now = time.monotonic()
        if fresh or self._seen is None or now - self._seen[0] > _NODES_FRESH:
            per_node: dict[str, int] = {}
            for worker in self.rt.live.workers(max_age=self.rt.settings.worker_ttl):
                per_node[worker.node] = per_node.get(worker.node, 0) + 1
            self._seen = (now, per_node)
        return self._seen[1]


def _fit_error(spec: JobSpec, per_node: dict[str, int]) -> str | None:
    if not per_node:
        return None  # nothing is up yet: the job waits for workers
    if spec.distributed:
        fitting = sorted(node for node, gpus in per_node.items() if gpus >= spec.gpus)
        if len(fitting) < spec.nodes:
            have = ", ".join(f"{node} {gpus}" for node, gpus in sorted(per_node.items()))
            return (
                f"nodes: {spec.nodes} nodes of {spec.gpus} GPUs asked, {len(fitting)} up have"
                f" that many (GPUs by node: {have})"
            )
        return None
    if spec.node is not None and spec.node not in per_node:
        up = ", ".join(sorted(per_node))
        return f"node: no node named {spec.node!r} is up (nodes: {up})"
    most = per_node[spec.node] if spec.node else max(per_node.values())
    if spec.gpus > most:
        where = f"node {spec.node!r}" if spec.node else "the largest node"
        return f"gpus: {spec.gpus} GPUs asked, {where} has {most}"
    return None


def accept(
    rt: Runtime,
    specs: Sequence[JobSpec],
    nodes: LiveNodes,
    submitted_by: str,
    submitted_from: str,
    leaser: SubmitLease | None = None,
    array: NewArray | None = None,
) -> list[JobRow]:
    """Accept several jobs at once, in order: their trees, their registry rows in
    one commit (with what they wait on, and ``array``, when they are its tasks),
    one round trip to queue those free to start and, when a GPU may be free, one
    dispatch pass. All or nothing: when any step fails, none is accepted. Returns
    the new jobs' rows as written, in order.

    Raises:
        SpecError: when no live node could ever run one of the jobs, a
            dependency names no job (``ugro.scheduling.workflow.resolve``), or a
            quota refuses them (``ugro.scheduling.sharing.check_submit``).
        DataDirError: when a job's tree could not be written (the data dir full).
    """
    if not specs:
        return []
    specs = [
        spec.model_copy(update={"working_dir": os.getcwd()}) if spec.working_dir is None else spec
        for spec in specs
    ]
    if any(spec.array is not None for spec in specs) and array is None:
        raise SpecError("array: set by ugro when it submits an array (Client.submit_array)")
    for spec in specs:
        nodes.check_fits(spec)
    sharing = sharing_policy(rt.settings)
    check_submit(rt.registry, sharing, specs, submitted_by)
    if array is None:
        ids = _fresh_ids(rt, specs)
    else:
        ids = [
            f"{array.id}-{spec.array.index if spec.array else n}" for n, spec in enumerate(specs)
        ]
    waits = resolve(rt, specs, ids)
    holds = holds_of(specs, capped=array is not None and array.max_running is not None)
    now = utcnow()
    accepted: list[tuple[JobSpec, JobPaths, dict[str, str]]] = []
    rows: list[dict[str, Any]] = []
    try:
        for job_id, spec, hold in zip(ids, specs, holds, strict=True):
            _, secrets = split_secrets(spec.env)
            stored = spec.model_copy(update={"env": redact_env(spec.env)})
            paths = rt.paths(job_id)
            if array is None:  # (a task's folder is made at its first start)
                with _writing_tree(rt):
                    paths.create(
                        {
                            "job_id": job_id,
                            "spec": stored.model_dump(mode="json"),
                            "submitted_at": now.isoformat(),
                            "submitted_by": submitted_by,
                            "submitted_from": submitted_from,
                        }
                    )
            accepted.append((spec, paths, secrets))
            # (a microsecond apart: the registry keeps a batch's submission order,
            # and the reconciler queues jobs again in it after Redis lost them)
            row = queued_row(job_id, stored, now + timedelta(microseconds=len(rows)), submitted_by)
            rows.append(row | {"hold": hold})
        if array is not None:
            with _writing_tree(rt):
                array.write_record(rt, len(specs), now, submitted_by, submitted_from)
        # (before a job can start: its worker's lines come after this one)
        for spec, paths, _ in accepted if array is None else []:
            size = f"{spec.nodes} nodes x " if spec.distributed else ""
            with _writing_tree(rt):
                paths.append_console(
                    f"accepted: {size}{spec.gpus} GPU(s), priority {spec.priority}"
                )
        # One job that fits now, with nothing waiting before it, is placed as it is
        # accepted: one row written once, no trip through the queue, its message
        # sent with its live record.
        placed = False
        alone = len(accepted) == 1 and not accepted[0][0].distributed  # (a gang: by a pass)
        # (a quota is kept by dispatch's pass, which sees what each holds)
        capped = alone and sharing.capped_accounts(submitted_by, accepted[0][0].group)
        if alone and holds[0] is None and not capped:
            placed = _place_at_once(rt, leaser or SubmitLease(rt), *accepted[0], rows[0])
        waiting_on = [
            {"job_id": job_id, "on_job": on, "kind": kind}
            for job_id, found in zip(ids, waits, strict=True)
            for on, kind in found
        ]
        arrays = [array.row(len(specs), now)] if array is not None else []
        may_place = not placed and _queue(rt, accepted, rows, waiting_on, arrays)
    except BaseException:
        for _, paths, _ in accepted:
            paths.remove()
        if array is not None:
            array.record_path(rt).unlink(missing_ok=True)
        raise
    # Dependencies that ended before these jobs were written: their ends did not
    # see them (``ugro.scheduling.workflow``).
    for job_id, hold in zip(ids, holds, strict=True):
        if hold == HOLD_AFTER and (given_up := settle(rt, job_id)) is not None:
            job_ended(rt, given_up.id, given_up.array_id)
    if array is not None and array.max_running is not None:
        may_place = release_slots(rt, array.id) > 0 or may_place
    if may_place:
        # Placing here, when a GPU is free, saves the jobs a hop through beat.
        dispatch_pending(rt)
    # (read back as the registry would, each column there: no ORM constructor per
    # row, which costs an array of thousands more than its commit)
    empty = dict.fromkeys(JobRow.__table__.columns.keys())
    return [job_from(empty | row) for row in rows]


def _fresh_ids(rt: Runtime, specs: Sequence[JobSpec]) -> list[str]:
    """A new id for each job: its name and 32 random bits, drawn again when taken.
    (Among 50,000 jobs of one name, two draws of the same bits are about a 1 in 4
    chance; the short id is what people type.)"""
    ids: dict[str, None] = {}  # (in order)
    for spec in specs:
        job_id = new_job_id(spec.name)
        while job_id in ids or rt.paths(job_id).root.exists():
            job_id = new_job_id(spec.name)
        ids[job_id] = None
    return list(ids)


@contextlib.contextmanager
def _writing_tree(rt: Runtime) -> Iterator[None]:
    """Turn a failed write of a new job's tree (its filesystem full, read-only, gone)
    into the error that names it; the caller takes back whatever was made."""
    try:
        yield
    except OSError as exc:
        why = write_failure(rt.settings.jobs_dir, exc)
        raise DataDirError(f"{why}; nothing was submitted") from exc


def queued_row(
    job_id: str, stored: JobSpec, now: datetime, user: str | None = None
) -> dict[str, Any]:
    """A job's registry row as it is accepted: queued (``stored``: its spec with the
    secrets' values redacted; ``user``: who submitted it)."""
    place = stored.array
    return {
        "user": user,
        "group_name": stored.group,
        "hold": None,
        "array_id": place.id if place is not None else None,
        "array_index": place.index if place is not None else None,
        "id": job_id,
        "name": stored.name,
        "kind": stored.kind,
        "status": JobStatus.QUEUED.value,
        "priority": stored.priority,
        "gpus": stored.gpus,
        "node": None,
        "attempt": 0,
        "max_retries": stored.max_retries,
        "spec": stored.model_dump_json(),
        "created_at": now,
    }


def _place_at_once(
    rt: Runtime,
    leaser: SubmitLease,
    spec: JobSpec,
    paths: JobPaths,
    secrets: dict[str, str],
    row: dict[str, Any],
) -> bool:
    """Lease GPUs for a job being accepted, write it down placed, registry row first,
    and send it to its worker, when it fits now and no job waits; False when it must
    be queued. All or nothing: a failure leaves no lease, no row, no live state and
    no message behind.

    Planned on what its client saw a moment ago, the job goes in one round trip:
    after its row, one script takes the lease and, with it, writes the live record
    and pushes the message (its worker finds the row). Should the GPUs have changed
    meanwhile, the row goes again and ``SubmitLease.lease`` decides: lease, then
    the live record with the message."""
    job = PendingJob(paths.job_id, spec.gpus, spec.node, spec.timeout)
    planned = leaser.planned(job)
    if planned is not None and _place_as_planned(rt, leaser, job, planned, spec, secrets, row):
        return True
    leased = leaser.lease(job)
    if leased is None:
        return False
    placement, token = leased

    def send() -> bool:
        message = rt.job_message(job.job_id, token, placement.node, list(placement.gpus))
        rt.live.placed_new(job.job_id, secrets, message, **_placed_fields(spec, placement))
        return True

    return _written_placed(rt, row, placement, token, send)


def _place_as_planned(
    rt: Runtime,
    leaser: SubmitLease,
    job: PendingJob,
    placement: Placement,
    spec: JobSpec,
    secrets: dict[str, str],
    row: dict[str, Any],
) -> bool:
    """``placement`` (``SubmitLease.planned``): the row, then the one script that
    leases, writes the live record and sends; False, leaving nothing, when the
    GPUs are not as planned on any more."""
    token = token_hex(8)

    def lease_and_send() -> bool:
        message = rt.job_message(job.job_id, token, placement.node, list(placement.gpus))
        fields = _placed_fields(spec, placement)
        then = rt.live.placed_new_commands(job.job_id, secrets, message, **fields)
        return leaser.take(job, placement, token, then) == "leased"

    return _written_placed(rt, row, placement, token, lease_and_send)


def _written_placed(
    rt: Runtime, row: dict[str, Any], placement: Placement, token: str, send: Callable[[], bool]
) -> bool:
    """The job's row written placed, then ``send`` (its live record and message;
    True when it sent them). When it did not, or anything failed, nothing is left:
    no row, no live state, no lease of ``token``."""
    job_id, gpus = row["id"], list(placement.gpus)
    placed = {
        **row,
        "status": JobStatus.PLACED.value,
        "node": placement.node,
        "gpu_indices": gpu_json(gpus),
        "placed_at": utcnow(),
        "placement_token": token,
    }
    try:
        rt.registry.create_jobs([placed])
        sent = send()
    except BaseException:
        # A script stops at its first failure, but what it wrote before stays.
        with contextlib.suppress(redis.RedisError):
            rt.live.forget_job(job_id)
        with contextlib.suppress(redis.RedisError):
            rt.live.leases.release(placement.node, gpus, f"{job_id}|{token}")
        rt.registry.delete_jobs([job_id])
        raise
    if not sent:
        rt.registry.delete_jobs([job_id])
        return False
    row.update(placed)  # (the row as the caller hands it back)
    return True


def _placed_fields(spec: JobSpec, placement: Placement) -> dict[str, Any]:
    """Its live record: what a queued one's holds (for placement's backfill), and
    its placement."""
    return {
        "status": JobStatus.PLACED.value,
        "node": placement.node,
        "gpus_held": gpu_json(placement.gpus),
        "priority": spec.priority,
        "gpus": spec.gpus,
        "timeout": spec.timeout,
    }


def _queue(
    rt: Runtime,
    accepted: list[tuple[JobSpec, JobPaths, dict[str, str]]],
    rows: list[dict[str, Any]],
    waiting_on: list[dict[str, Any]],
    arrays: list[dict[str, Any]],
) -> bool:
    """The registry rows (with ``waiting_on``, their dependencies, and ``arrays``),
    then the live queue of those not held; the rows go again if queueing fails.
    Returns whether a dispatch pass could place one of the jobs now (no when every
    GPU was leased as they were queued: the next GPU freed comes with a pass)."""
    ids = [row["id"] for row in rows]
    rt.registry.create_jobs(rows, waiting_on, arrays)
    try:
        for _, paths, secrets in accepted:
            rt.live.store_secrets(paths.job_id, secrets)
        return rt.live.enqueue_many(
            [
                QueuedEntry(
                    paths.job_id,
                    spec.priority,
                    spec.gpus,
                    spec.node,
                    spec.timeout,
                    nodes=spec.nodes,
                )
                for (spec, paths, _), row in zip(accepted, rows, strict=True)
                if row["hold"] is None
            ],
            watch=True,
            window=WINDOW,
        )
    except BaseException:
        with contextlib.suppress(redis.RedisError):
            for job_id in ids:
                rt.live.forget_job(job_id)
        rt.registry.delete_jobs(ids)
        raise
