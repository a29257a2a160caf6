"""Workflows: jobs that wait on other jobs, and arrays that run at most so many
tasks at once.

A held job (``ugro.jobs.dependencies``) is queued in the registry but not in the
live queue, so dispatch never reads it, however many there are. It is let go
(queued live) or given up (cancelled, reason ``dependency``) when a job it waits
on ends: every final status change calls ``job_ended``, which looks at the jobs
that wait on that one, before the dispatch pass that follows the end. A job let
go whose array runs ``max_running`` tasks already waits on for a slot, which the
end of one of its array's tasks frees.

The submitter looks too, once its rows are written, for a job whose dependencies
ended before it was submitted (or while it was): the hold's compare-and-set lets
only one of them act. The reconciler looks at every held job now and then, the
safety net for a process that died between an end and its look.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from ugro.errors import RegistryUnreachable, SpecError
from ugro.jobs.dependencies import (
    HOLD_AFTER,
    HOLD_SLOT,
    DependencyKind,
    verdict,
    waiting_for,
)
from ugro.jobs.lifecycle import ExitReason, JobStatus
from ugro.jobs.spec import JobSpec
from ugro.live.state import QueuedEntry
from ugro.registry.holds import (
    array_ended,
    cancel_queued_tasks,
    capped_arrays,
    dependencies_of,
    get_array,
    held_after,
    held_dependents,
    held_dependents_of,
    let_go,
    take_slots,
)
from ugro.registry.models import JobRow, utcnow
from ugro.runtime import Runtime
from ugro.scheduling.end_notice import announce_end

log = logging.getLogger(__name__)


def job_ended(
    rt: Runtime, job_id: str, array_id: str | None = None, held: list[str] | None = None
) -> None:
    """After ``job_id`` reached a final status: let go of the jobs it held that may
    start now, give up those that never can (and theirs, transitively), and hand
    its array's freed slot on; tell the end to whoever asked (``end_notice``).
    ``held``: the jobs held waiting on it, when the end's commit read them."""
    ended: list[tuple[str, str | None]] = [(job_id, array_id)]
    while ended:
        job, array = ended.pop()
        announce_end(rt, job, array)
        try:
            if held is not None and job == job_id:
                waiting = list(held)
            else:
                waiting = held_dependents(rt.registry, job)
            if array is not None:
                release_slots(rt, array)
                # What waits on the array as a whole, once its last task ended.
                on_array = held_dependents(rt.registry, array)
                if on_array and array_ended(rt.registry, array):
                    waiting += on_array
            for dependent in waiting:
                given_up = settle(rt, dependent)
                if given_up is not None:
                    ended.append((given_up.id, given_up.array_id))
        except RegistryUnreachable:
            raise  # (the end waits for the registry, and looks again)
        except Exception:
            # The end itself is recorded: what it lets go waits for the
            # reconciler's next look (``look_again``) instead of failing it.
            log.warning("the jobs waiting on %s are left to the reconciler", job, exc_info=True)


def settle(rt: Runtime, job_id: str) -> JobRow | None:
    """Look at a held job's dependencies now: let it go when all are met, give it
    up when one never can be. Returns the job when it was given up (its own
    dependents are the caller's to look at), else None."""
    found = verdict(dependencies_of(rt.registry, job_id))
    if found.state == "wait":
        return None
    if found.state == "go":
        array_id = rt.registry.get_job(job_id).array_id
        if array_id is not None and _capped(rt, array_id):
            # (its turn comes with a free slot of its array)
            if let_go(rt.registry, job_id, HOLD_AFTER, HOLD_SLOT) is not None:
                release_slots(rt, array_id)
        elif (row := let_go(rt.registry, job_id, HOLD_AFTER, None)) is not None:
            queue_live(rt, [row])
        return None
    return _give_up(rt, job_id, found.why)


def _capped(rt: Runtime, array_id: str) -> bool:
    array = get_array(rt.registry, array_id)
    return array is not None and array.max_running is not None


def _give_up(rt: Runtime, job_id: str, why: str) -> JobRow | None:
    ended: dict[str, Any] = {
        "finished_at": utcnow(),
        "exit_reason": ExitReason.DEPENDENCY,
        "error": why,
        "hold": None,
    }
    if not rt.transition(job_id, JobStatus.CANCELLED, expect=[JobStatus.QUEUED], **ended):
        return None  # cancelled or let go by another meanwhile
    with contextlib.suppress(OSError):  # (the registry says it: a full disk must not stop it)
        rt.paths(job_id).append_console(f"cancelled: {why}")
    rt.registry.add_event("job_cancelled", f"{job_id} cancelled: {why}", job_id)
    return rt.registry.get_job(job_id)


def release_slots(rt: Runtime, array_id: str) -> int:
    """Queue live as many of the array's tasks waiting for a slot as it has free."""
    rows = take_slots(rt.registry, array_id)
    queue_live(rt, rows)
    return len(rows)


def queue_live(rt: Runtime, rows: Sequence[JobRow]) -> None:
    """Put jobs let go into the live queue, where dispatch finds them."""
    entries = []
    for row in rows:
        spec = JobSpec.model_validate_json(row.spec)
        entries.append(
            QueuedEntry(row.id, row.priority, row.gpus, spec.node, spec.timeout, nodes=spec.nodes)
        )
    if entries:
        rt.live.enqueue_many(entries)


def cancel_waiting_tasks(rt: Runtime, array_id: str) -> list[str]:
    """Cancel every task of an array that has not been placed yet, at once (an
    array of thousands in one statement and one round trip), then settle what
    waited on them; the ids cancelled."""
    ended: dict[str, Any] = {"finished_at": utcnow(), "exit_reason": ExitReason.CANCELLED}
    ids = cancel_queued_tasks(rt.registry, array_id, ended)
    if not ids:
        return []
    writes = rt.live.redis.pipeline(transaction=False)
    fields = {"status": JobStatus.CANCELLED.value, "exit_reason": ExitReason.CANCELLED.value}
    for job_id in ids:
        rt.live.queue_set_job(writes, job_id, fields)
    writes.execute()
    rt.registry.add_event("array_cancelled", f"{array_id}: {len(ids)} waiting task(s) cancelled")
    for dependent in held_dependents_of(rt.registry, [*ids, array_id]):
        if (given_up := settle(rt, dependent)) is not None:
            job_ended(rt, given_up.id, given_up.array_id)
    return ids


def look_again(rt: Runtime) -> int:
    """The reconciler's look at every held job: dependencies that ended unseen,
    array slots not handed on. Returns how many jobs it let go or gave up."""
    changed = 0
    for job_id in held_after(rt.registry):
        given_up = settle(rt, job_id)
        if given_up is not None:
            job_ended(rt, given_up.id, given_up.array_id)
        changed += given_up is not None
    for array_id in capped_arrays(rt.registry):
        changed += release_slots(rt, array_id)
    return changed


def retry_held(rt: Runtime, row: JobRow, expect: Sequence[JobStatus]) -> bool | None:
    """A retry by hand of a job that waits on others or on a slot of its array:
    queued again held, then looked at as a new one is (so a dependency that still
    can never be met cancels it again, naming it). None when it waits on nothing:
    the caller queues it as any job; False when its status changed meanwhile."""
    waits = bool(dependencies_of(rt.registry, row.id))
    capped = row.array_id is not None and _capped(rt, row.array_id)
    if not waits and not capped:
        return None
    hold = HOLD_AFTER if waits else HOLD_SLOT
    cleared = {"node": None, "gpu_indices": None, "members": None, "finished_at": None}
    if not rt.transition(row.id, JobStatus.QUEUED, expect=expect, hold=hold, **cleared):
        return False
    with contextlib.suppress(OSError):
        rt.paths(row.id).append_console("retried by hand: held until it may start")
    if waits:
        if (given_up := settle(rt, row.id)) is not None:
            job_ended(rt, given_up.id, given_up.array_id)
    elif row.array_id is not None:
        release_slots(rt, row.array_id)
    return True


def why_held(rt: Runtime, job_id: str, hold: str) -> str:
    """``ugro status``'s reason of a held job: what it waits for."""
    if hold == HOLD_AFTER:
        return waiting_for(dependencies_of(rt.registry, job_id))
    row = rt.registry.get_job(job_id)
    array = get_array(rt.registry, row.array_id) if row.array_id else None
    cap = array.max_running if array is not None else None
    return f"waiting for a slot: array {row.array_id} runs at most {cap} tasks at once"


def resolve(
    rt: Runtime, specs: Sequence[JobSpec], ids: Sequence[str]
) -> list[list[tuple[str, DependencyKind]]]:
    """Each spec's dependencies as job ids: a job's id, an array's (each of its
    tasks), or in this batch another spec's name (``ids``: the batch's new ids).

    Raises:
        SpecError: a dependency names no job, array or spec of the batch; or the
            batch's specs wait on each other in a cycle.
    """
    by_name: dict[str, int] = {}
    for index, spec in enumerate(specs):
        by_name.setdefault(spec.name, index)
    resolved: list[list[tuple[str, DependencyKind]]] = []
    within: dict[int, set[int]] = {}
    for index, spec in enumerate(specs):
        found: list[tuple[str, DependencyKind]] = []
        for ref, kind in spec.dependencies:
            if ref in by_name and by_name[ref] != index:
                within.setdefault(index, set()).add(by_name[ref])
                found.append((ids[by_name[ref]], kind))
            else:
                found += [(job, kind) for job in _existing(rt, ref, kind)]
        resolved.append(found)
    _refuse_cycles(specs, within)
    return resolved


def _existing(rt: Runtime, ref: str, kind: str) -> list[str]:
    if get_array(rt.registry, ref) is not None:
        return [ref]  # (the array as one: ``array_status``)
    if ref in rt.registry.statuses([ref]):
        return [ref]
    raise SpecError(f"{kind}: no job or array {ref!r}: `ugro list` shows the jobs there are")


def _refuse_cycles(specs: Sequence[JobSpec], within: dict[int, set[int]]) -> None:
    """Refuse specs of one batch that wait on each other in a cycle, naming it."""
    state: dict[int, str] = {}

    def visit(node: int, path: list[int]) -> None:
        state[node] = "open"
        for after in sorted(within.get(node, ())):
            if state.get(after) == "open":
                cycle = [*path[path.index(after) :], after] if after in path else [node, after]
                names = " -> ".join(specs[i].name for i in cycle)
                raise SpecError(f"after: the jobs wait on each other in a cycle: {names}")
            if after not in state:
                visit(after, [*path, after])
        state[node] = "done"

    for node in within:
        if node not in state:
            visit(node, [node])


def holds_of(specs: Iterable[JobSpec], capped: bool) -> list[str | None]:
    """Each new job's hold as it is written: its dependencies first, then a slot of
    a capped array, else none."""
    return [HOLD_AFTER if spec.dependencies else HOLD_SLOT if capped else None for spec in specs]
