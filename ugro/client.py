"""Client: the Python API, and the only API the CLI uses.

What reads jobs (``get``, ``list``, ``logs``) needs the registry and the tree only,
and the commands people type all day are those reads: so the modules that submit,
dispatch, wait on events and control runs are imported by the methods that use
them, and a client that only reads never loads them.
"""

from __future__ import annotations

import builtins
import contextlib
import getpass
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ugro.errors import JobNotFound, StateError
from ugro.job import Job
from ugro.job_logs import follow_log, log_file
from ugro.jobs.lifecycle import ExitReason, JobStatus
from ugro.registry.members import members_of
from ugro.registry.models import JobRow, MemberRow, placement_of, utcnow
from ugro.runtime import Runtime
from ugro.settings import Settings

if TYPE_CHECKING:
    from ugro.arrays import JobArray
    from ugro.cleanup import Cleanup
    from ugro.health.samples import NodeSample
    from ugro.health.sweep import SweepReport
    from ugro.jobs.spec import JobSpec
    from ugro.jobs.sweep import SweepSpec
    from ugro.scheduling.submit import LiveNodes
    from ugro.scheduling.submit_lease import SubmitLease

# How long (s) a wait reads on after a job ended while others still run, so that
# one registry read covers a batch of a sweep's ends (``events.await_end``).
_LINGER = 0.02


class Client:
    """Submit, inspect and wait for jobs.

    Args:
        settings: defaults to ``Settings()``, read from ``UGRO_*`` variables, the
            same as the CLI.
        connect: reach Redis now (the default); without it, Redis is reached when
            a call first needs it, and ``get``, ``list``, ``logs`` and
            ``node_history``, which read the registry and the tree only, work
            while the stack is down.

    Raises:
        NotRunningError: when the Redis server does not answer (`ugro up` first),
            at once or, without ``connect``, from the first call that needs it.
    """

    def __init__(self, settings: Settings | None = None, connect: bool = True) -> None:
        self.settings = settings or Settings()
        self.rt = Runtime.open(self.settings, connect=connect)
        self.user = self.settings.user or getpass.getuser()
        self._host = socket.gethostname()
        # What submit keeps between calls (the live nodes it read, its leaser), made
        # by the first submit.
        self._submitting: tuple[LiveNodes, SubmitLease] | None = None
        self._events: Any = None  # the status events subscription, kept between waits

    def close(self) -> None:
        self._close_events()
        self.rt.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # Submitting -------------------------------------------------------------------

    def submit(self, spec: JobSpec) -> Job:
        """Accept a job: create its tree and registry row, queue it, place it if a GPU
        is free. Nothing is left behind when any step fails.

        Raises:
            SpecError: when no live node could ever run the job.
            DataDirError: when its tree could not be written (the data dir full).
        """
        return self.submit_many([spec])[0]

    def submit_many(self, specs: Sequence[JobSpec]) -> builtins.list[Job]:
        """Accept several jobs at once, as ``submit`` does one, in order: their trees,
        their registry rows in one commit, one round trip to queue them all and one
        dispatch pass. All or nothing: when any step fails, none is accepted.

        Raises:
            SpecError: when no live node could ever run one of the jobs.
            DataDirError: when a job's tree could not be written (the data dir full).
        """
        rows = self._accept(specs)
        # As accepted (queued or placed): no second read of what was just written.
        return [Job.from_row(row, self.settings.jobs_dir) for row in rows]

    def submit_array(
        self, spec: JobSpec, indices: Sequence[int], max_running: int | None = None
    ) -> JobArray:
        """Accept an array: one task a index, ``{index}`` in ``spec``'s argv filled in
        and ``UGRO_ARRAY_ID``, ``UGRO_ARRAY_INDEX``, ``UGRO_ARRAY_COUNT`` in its
        environment; at most ``max_running`` placed or running at once. All or none,
        in one registry commit, as ``submit_many``.

        Raises:
            SpecError: as ``submit_many``; or a ``{name}`` in the argv other than
                ``{index}``.
        """
        from ugro.arrays import array_specs
        from ugro.scheduling.new_array import NewArray

        array_id, specs = array_specs(spec, indices)
        new = NewArray(array_id, spec.name, "array", max_running, template=spec)
        return self._accepted_array(new, self._accept(specs, new))

    def sweep(self, sweep: SweepSpec) -> tuple[JobArray, Job | None]:
        """Accept a sweep: its points as an array whose tasks carry their parameters,
        then its ``then`` job, waiting on every task, if it has one."""
        from ugro.arrays import point_specs
        from ugro.jobs.spec import JobSpec, new_job_id
        from ugro.scheduling.new_array import NewArray

        array_id = new_job_id(sweep.name)
        template = JobSpec(name=sweep.name, command=sweep.command, **sweep.job_fields())
        specs = point_specs(template, sweep.commands(array_id), array_id)
        then = None
        if sweep.then is not None:  # (checked before anything is submitted)
            fields = sweep.then.job_fields()
            argv = sweep.then.argv(array_id)
            then = JobSpec(name=sweep.then.name, command=argv, after=[array_id], **fields)
        new = NewArray(
            array_id, sweep.name, "sweep", sweep.max_running, sweep.parameters(), template
        )
        array = self._accepted_array(new, self._accept(specs, new))
        follow_up = self.submit(then) if then is not None else None
        return array, follow_up

    def _accepted_array(self, new: Any, rows: builtins.list[JobRow]) -> JobArray:
        """The array as accepted, from its rows as written (no second read)."""
        from ugro.arrays import JobArray

        tasks = [Job.from_row(row, self.settings.jobs_dir) for row in rows]
        created = rows[0].created_at if rows else utcnow()
        params = new.params or []
        return JobArray(
            new.id, new.name, new.kind, len(rows), new.max_running, created, params, tasks
        )

    def _accept(self, specs: Sequence[JobSpec], array: Any = None) -> builtins.list[JobRow]:
        from ugro.scheduling.submit import LiveNodes, accept
        from ugro.scheduling.submit_lease import SubmitLease

        if self._submitting is None:
            self._submitting = (LiveNodes(self.rt), SubmitLease(self.rt))
        nodes, leaser = self._submitting
        return accept(self.rt, specs, nodes, self.user, self._host, leaser, array)

    def get_array(self, array_id: str) -> JobArray:
        """An array or sweep by id, its tasks as they are now.

        Raises:
            JobNotFound: no array has that id.
        """
        from ugro.arrays import JobArray
        from ugro.registry.holds import array_tasks, get_array, param_names

        row = get_array(self.rt.registry, array_id)
        if row is None:
            raise JobNotFound(f"no array {array_id!r}: `ugro list` shows the arrays there are")
        tasks = [self._job(task) for task in array_tasks(self.rt.registry, [row.id])[row.id]]
        return JobArray.of(row, tasks, param_names(row))

    def arrays(self, limit: int | None = None) -> builtins.list[JobArray]:
        """Arrays and sweeps, newest first."""
        from ugro.registry.holds import list_arrays

        return [self.get_array(row.id) for row in list_arrays(self.rt.registry, limit)]

    def is_array(self, array_id: str) -> bool:
        from ugro.registry.holds import get_array

        return get_array(self.rt.registry, array_id) is not None

    # Run control ------------------------------------------------------------------

    def cancel(self, job_id: str, grace: float | None = None) -> Job:
        """Cancel a job: a queued one never starts; a running one gets SIGTERM on its
        whole process group, then SIGKILL after ``grace`` seconds (default: the
        ``stop_grace`` setting). Returns the job; a running job's status becomes
        ``cancelled`` once its processes are gone (``wait`` for it).

        Raises:
            StateError: the job has already finished or failed.
        """
        from ugro.scheduling.dispatch import dispatch_pending

        grace = self.settings.stop_grace if grace is None else grace
        for _ in range(10):  # the status may change under us; try again when it does
            job = self.get(job_id)
            if job.status is JobStatus.CANCELLED:
                return job
            if job.status in (JobStatus.FINISHED, JobStatus.FAILED):
                raise StateError(f"job {job.id} has already {job.status.value}")
            if job.status is JobStatus.RUNNING:
                self.rt.live.stops.request_cancel(job.id, grace)
                self.rt.paths(job.id).append_console(f"cancel requested (grace {grace:g} s)")
                return self.get(job.id)
            ended: dict[str, Any] = {"finished_at": utcnow(), "exit_reason": ExitReason.CANCELLED}
            if self.rt.transition(job.id, JobStatus.CANCELLED, expect=[job.status], **ended):
                from ugro.scheduling.workflow import job_ended

                job_ended(self.rt, job.id, job.array_id)
                self.rt.live.dequeue(job.id)
                if job.node:
                    for node, gpus in placement_of(self.rt.registry.get_job(job.id)):
                        self.rt.live.leases.release_job(job.id, node, gpus)
                    dispatch_pending(self.rt)
                self.rt.paths(job.id).append_console(f"cancelled while {job.status.value}")
                self.rt.registry.add_event("job_cancelled", f"{job.id} cancelled", job.id)
                return self.get(job.id)
        raise StateError(f"job {job_id} kept changing status; try again")

    def cancel_array(self, array_id: str, grace: float | None = None) -> builtins.list[Job]:
        """Cancel every task of an array not ended yet (those not placed first, so
        none takes a slot freed by another's cancel); returns those it stopped."""
        from ugro.scheduling.workflow import cancel_waiting_tasks

        cancel_waiting_tasks(self.rt, array_id)  # (those not placed yet: at once)
        tasks = [task for task in self.get_array(array_id).tasks if not task.done]
        return [self._cancel_if_active(task.id, grace) for task in tasks]

    def _cancel_if_active(self, job_id: str, grace: float | None) -> Job:
        try:
            return self.cancel(job_id, grace)
        except StateError:  # it ended meanwhile
            return self.get(job_id)

    def retry_array(self, array_id: str) -> builtins.list[Job]:
        """Queue an array's failed tasks again; returns them."""
        failed = [t for t in self.get_array(array_id).tasks if t.status is JobStatus.FAILED]
        return [self.retry(task.id) for task in failed]

    def retry(self, job_id: str) -> Job:
        """Queue a failed, cancelled or lost job again, as its next attempt.

        Raises:
            StateError: the job is not failed, cancelled or lost.
        """
        from ugro.execution.outcome import requeue
        from ugro.scheduling.dispatch import dispatch_pending

        job = self.get(job_id)
        ended = [JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.LOST]
        if job.status not in ended:
            raise StateError(
                f"job {job.id} is {job.status.value}: only a failed, cancelled"
                " or lost job can be retried"
            )
        from ugro.scheduling.workflow import retry_held

        row = self.rt.registry.get_job(job.id)
        held = retry_held(self.rt, row, ended)
        if held is None:
            held = requeue(self.rt, row, ended, "retried by hand", finished_at=None)
        if not held:
            raise StateError(f"job {job.id} changed status; look again with `ugro status`")
        dispatch_pending(self.rt)
        return self.get(job.id)

    # Reading ------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        """One job by id (or a unique prefix of it).

        Raises:
            JobNotFound: no job has that id.
        """
        from ugro.jobs.spec import check_job_id

        check_job_id(job_id)
        return self._job(self.rt.registry.find_job(job_id))

    def list(
        self,
        status: Sequence[JobStatus] | None = None,
        limit: int | None = None,
        tasks: bool = True,
        user: str | None = None,
        group: str | None = None,
        tags: Sequence[str] = (),
    ) -> builtins.list[Job]:
        """Jobs, newest first (without ``tasks``: no task of an array, see ``arrays``;
        with ``user`` or ``group``: only theirs; with ``tags``: only those with every
        one of them)."""
        rows = self.rt.registry.list_jobs(
            statuses=status, limit=limit, tasks=tasks, user=user, group=group, tags=tags
        )
        return [self._job(row) for row in rows]

    def _job(self, row: JobRow) -> Job:
        """The job of a row; a running job the progress scan (once a minute) has not
        reached yet gets its progress read from its directory now."""
        if row.status == JobStatus.RUNNING.value and not row.progress:
            from ugro.progress.jobs import progress_now

            return Job.from_row(row, self.settings.jobs_dir, progress_now(self.rt, row))
        return Job.from_row(row, self.settings.jobs_dir)

    def wait(
        self,
        job_ids: str | Sequence[str],
        timeout: float | None = None,
        on_change: Callable[[builtins.list[Job]], None] | None = None,
    ) -> builtins.list[Job]:
        """Block until every job has ended; returns them in the order given.

        Wakes on the status events the workers publish (ends within 20 ms of one
        another together, the last job's at once), and looks at the status of
        every job not done yet at least once a second, in case an event was missed.
        ``on_change`` is called with every job at first, then with the jobs read
        again: those an event said ended and those whose status changed. A wake
        costs what changed, not what is waited on (a sweep of thousands).

        Raises:
            TimeoutError: when ``timeout`` seconds pass first.
        """
        from ugro.live.events import await_end

        given = [job_ids] if isinstance(job_ids, str) else builtins.list(job_ids)
        given = [task for job_id in given for task in self._tasks_or_job(job_id)]
        events = self._subscription()  # before the first read: no event is missed
        latest = self._by_full_id(given)
        ids = [latest[job_id].id for job_id in given]
        latest = {job.id: job for job in latest.values()}
        read = builtins.list(latest.values())
        left = {job.id for job in read if not job.done}
        deadline = None if timeout is None else time.monotonic() + timeout
        full, next_full = True, 0.0
        try:
            while True:
                if on_change is not None and read:
                    on_change(read)
                if not left:
                    return [latest[job_id] for job_id in ids]
                now = time.monotonic()
                if full:
                    next_full = now + 1.0
                if deadline is not None and now >= deadline:
                    raise TimeoutError(f"jobs still not done after {timeout} s: {sorted(left)}")
                until = next_full if deadline is None else min(next_full, deadline)
                ended = await_end(events, left, until, _LINGER)
                full = not ended or time.monotonic() >= next_full
                if full:  # the status of every job not done yet, once a second
                    ended |= self._changed(left, latest)
                read = self.get_many(builtins.list(ended))
                latest.update((job.id, job) for job in read)
                left.difference_update(job.id for job in read if job.done)
        except BaseException:
            # The subscription may hold unread replies or be broken: start afresh.
            self._close_events()
            raise

    def _tasks_or_job(self, job_id: str) -> builtins.list[str]:
        """An array's task ids, or the job id as given."""
        if self.is_array(job_id):
            return [task.id for task in self.get_array(job_id).tasks]
        return [job_id]

    def _changed(self, ids: set[str], latest: dict[str, Job]) -> set[str]:
        """Those of ``ids`` whose status in the registry is not the one in ``latest``
        (or that are gone: reading them again says so)."""
        now = self.rt.registry.statuses(builtins.list(ids))
        return {job_id for job_id in ids if now.get(job_id) != latest[job_id].status.value}

    def _by_full_id(self, given: builtins.list[str]) -> dict[str, Job]:
        """The jobs of ids or unique prefixes, by what was given (JobNotFound for an
        id that names none): one read when all are full ids."""
        rows = self.rt.registry.list_jobs(ids=given)
        found = {row.id: Job.from_row(row, self.settings.jobs_dir) for row in rows}
        return {job_id: found.get(job_id) or self.get(job_id) for job_id in given}

    def _subscription(self) -> Any:
        """The status events subscription, made once and kept between waits; events
        that arrived since the last wait are dropped (the registry is read anew)."""
        from ugro.live.events import next_event

        if self._events is None:
            self._events = self.rt.live.subscribe()
        while next_event(self._events, 0) is not None:
            pass
        return self._events

    def _close_events(self) -> None:
        if self._events is not None:
            import redis

            with contextlib.suppress(redis.RedisError, OSError):
                self._events.close()
            self._events = None

    def why_waiting(self, job_id: str) -> str | None:
        """Why a queued job has not started yet (None when it is not queued)."""
        job = self.get(job_id)
        if job.status is not JobStatus.QUEUED:
            return None
        if job.hold is not None:
            from ugro.scheduling.workflow import why_held

            return why_held(self.rt, job.id, job.hold)
        from ugro.jobs.spec import JobSpec
        from ugro.scheduling.explain import why_preempting, why_waiting
        from ugro.scheduling.planning import gpu_view
        from ugro.scheduling.sharing import quota_reason

        row = self.rt.registry.get_job(job.id)
        spec = JobSpec.model_validate_json(row.spec)
        gpus = spec.gpus * spec.nodes
        if over := quota_reason(self.rt.registry, self.rt.settings, row.user, spec.group, gpus):
            return over
        if victims := self.rt.live.preemption.stopping_for(job.id):
            return why_preempting(victims)
        ahead, ready_in = self.rt.live.queue_position(job.id)
        view = gpu_view(self.rt)
        return why_waiting(job.gpus, spec.node, view, ahead or 0, ready_in, spec.nodes)

    def nodes(self) -> builtins.list[dict[str, Any]]:
        """Each node: its health (score, level, system readings, last check), its
        breaker as it stands now (``breaker``; ``breaker_open_until``, when an open
        breaker's window ends, else None) and its GPUs (worker up, free, held by a
        job, or blocked, with readings)."""
        from ugro.node_view import node_view

        return node_view(self.rt)

    def sweep_health(self) -> SweepReport:
        """A health sweep now, whatever its interval, then a dispatch pass when a
        node came back (jobs may have waited for exactly that node)."""
        from ugro.health.sweep import health_sweep
        from ugro.scheduling.dispatch import dispatch_pending

        report = health_sweep(self.rt, force=True)
        if report is None:  # only an unforced sweep is ever turned away
            raise StateError("the health sweep did not run")
        if report.recovered:
            dispatch_pending(self.rt)
        return report

    def node_history(self, since: datetime, node: str | None = None) -> builtins.list[NodeSample]:
        """The health sweep's samples since ``since``, oldest first."""
        from ugro.health.samples import samples

        return samples(self.rt.registry, since, node=node)

    def get_many(self, ids: builtins.list[str]) -> builtins.list[Job]:
        """Several jobs by their full ids, in the order given."""
        rows = {row.id: row for row in self.rt.registry.list_jobs(ids=ids)}
        missing = [job_id for job_id in ids if job_id not in rows]
        if missing:
            raise JobNotFound(f"no job {missing[0]!r}")
        return [Job.from_row(rows[job_id], self.settings.jobs_dir) for job_id in ids]

    def members(self, job_id: str) -> builtins.list[MemberRow]:
        """The members of a gang job's latest attempt, in rank order: where each runs
        and how far it got (none before the first claims, none for a one-node job)."""
        row = self.rt.registry.find_job(job_id)
        return members_of(self.rt.registry, row.id, row.attempt) if row.attempt else []

    def logs(
        self,
        job_id: str,
        follow: bool = False,
        attempt: int | None = None,
        poll: float = 0.2,
        rank: int | None = None,
        node: str | None = None,
    ) -> Iterator[str]:
        """The job's training log (of ``attempt``, default the newest); with
        ``follow``, until the job has ended, across its retries.

        Args:
            rank: read that rank's log instead (a gang job's, or a job's launched one
                process a GPU).
            node: read the log of the first rank the job's member on that node runs.

        Raises:
            SpecError: an attempt, rank or node the job does not have, or both a rank
                and a node.
        """
        job = self.get(job_id)
        path = log_file(self.rt, job, attempt, rank, node)
        return follow_log(self.get, job, path, follow, poll)

    def metrics(self, job_id: str, last: int | None = None) -> builtins.list[dict[str, Any]]:
        """The records the job logged (``ugro.log_metrics``: its ``metrics.jsonl``),
        oldest first, the last ``last`` of them when given; a corrupt line is skipped."""
        from ugro.job_metrics import read_records

        return read_records(self.rt.paths(self.get(job_id).id).metrics, last)

    def metrics_frame(self, job_id: str, last: int | None = None) -> Any:
        """``metrics`` as a pandas DataFrame, a column per field.

        Raises:
            ImportError: pandas is not installed (ugro does not need it).
        """
        from ugro.job_metrics import records_frame

        return records_frame(self.metrics(job_id, last))

    def follow_metrics(
        self, job_id: str, last: int | None = None, poll: float = 0.2
    ) -> Iterator[dict[str, Any]]:
        """``metrics``, then each record the job logs after them, until it has ended."""
        from ugro.job_metrics import follow_records

        job = self.get(job_id)
        path = self.rt.paths(job.id).metrics
        return follow_records(self.get, job, path, last, follow=True, poll=poll)

    # Cleanup --------------------------------------------------------------------------

    def remove(self, ids: Sequence[str], keep_tree: bool = False) -> Cleanup:
        """Remove ended jobs and arrays (ids or unique prefixes of job ids): their
        registry rows, Redis records and folders (``keep_tree``: the folders stay).
        An array goes whole, with its tasks and ``arrays/<id>.json``.

        Raises:
            JobNotFound: an id names no job or array.
            StateError: one of them has not ended (or a waiting job depends on it);
                nothing is removed then.
        """
        from ugro.cleanup import remove

        whole = [i if self.is_array(i) else self.rt.registry.find_job(i).id for i in ids]
        done = remove(self.rt, list(dict.fromkeys(whole)), keep_tree)
        if done.refused:
            job_id, why = next(iter(done.refused.items()))
            raise StateError(f"{job_id} cannot be removed: {why}; nothing was removed")
        return done

    def gc(
        self,
        older_than: float,
        statuses: Sequence[str] | None = None,
        keep_tree: bool = False,
        dry_run: bool = False,
    ) -> Cleanup:
        """Remove the jobs (and whole arrays) that ended more than ``older_than``
        seconds ago, in one of ``statuses`` (default: finished, failed or cancelled);
        ``dry_run``: only say which."""
        from ugro.cleanup import collect

        return collect(self.rt, older_than, statuses, keep_tree, dry_run)
