"""Runtime: the settings, the registry and the live state of one process, together.

A job's status changes here (``transition``, ``place_jobs``, ``claim``,
``place_and_claim``, ``end_attempt``): first in the registry, whose every status
write checks the move against the lifecycle table
(``ugro.jobs.lifecycle.transition_sources``) before its compare-and-set, then,
once it took, mirrored in Redis.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ugro.jobs.lifecycle import JobStatus
from ugro.jobs.paths import JobPaths
from ugro.live.keys import Keys
from ugro.registry.models import JobRow, utcnow
from ugro.registry.placing import JobPlacement, mark_placed
from ugro.registry.store import Registry
from ugro.settings import Settings
from ugro.transport.queues import queue_for_gpu

if TYPE_CHECKING:
    # Loaded when used: a command that reads the registry only needs no Redis client.
    from ugro.live.job_message import JobMessage
    from ugro.live.state import LiveState
    from ugro.live.writes import Writes


@dataclass
class Runtime:
    settings: Settings
    registry: Registry
    _live: LiveState | None = field(default=None, repr=False)
    _wait_out_restarts: bool = field(default=False, repr=False)
    _app: Any = field(default=None, repr=False)

    @classmethod
    def open(
        cls, settings: Settings, wait_out_restarts: bool = False, connect: bool = True
    ) -> Runtime:
        """With ``wait_out_restarts`` (worker processes), Redis commands wait out a restart.
        Without ``connect``, Redis is reached at the first use of ``live``: what
        reads only the registry and the tree works while Redis is down.

        Raises:
            NotRunningError: with ``connect``, when Redis does not answer.
        """
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        live = None
        if connect:
            from ugro.live.state import LiveState

            live = LiveState.open(settings, wait_out_restarts=wait_out_restarts)
        return cls(settings, Registry(settings.effective_database_url), live, wait_out_restarts)

    @property
    def live(self) -> LiveState:
        """The live state in Redis, connected on first use.

        Raises:
            NotRunningError: when Redis does not answer.
        """
        if self._live is None:
            from ugro.live.state import LiveState

            self._live = LiveState.open(self.settings, wait_out_restarts=self._wait_out_restarts)
        return self._live

    @property
    def keys(self) -> Keys:
        return self.live.keys

    @property
    def app(self) -> Any:
        """The Celery app, made on first use (a client that only reads needs none)."""
        if self._app is None:
            from ugro.transport.celery_app import make_app

            self._app = make_app(self.settings)
        return self._app

    def paths(self, job_id: str) -> JobPaths:
        return JobPaths(self.settings.jobs_dir, job_id)

    def job_message(
        self, job_id: str, token: str, node: str, gpus: list[int], rank: int | None = None
    ) -> JobMessage:
        """A placed job's message (a gang job's member's, with ``rank``) to its first
        GPU's worker, for the caller to push in its own transaction
        (``ugro.live.job_message``)."""
        queue = queue_for_gpu(self.settings, node, gpus[0])
        from ugro.live.job_message import job_message

        return job_message(self.app, self.keys, queue, job_id, token, node, gpus, rank)

    def send_job(
        self,
        job_id: str,
        token: str,
        node: str,
        gpus: list[int],
        writes: Writes | None = None,
        rank: int | None = None,
    ) -> None:
        """Send a placed job (a gang job's member, with ``rank``) to the queue of its
        first GPU's worker (with ``writes``: as one of its commands)."""
        message = self.job_message(job_id, token, node, gpus, rank)
        (self.live.redis if writes is None else writes).lpush(message.key, message.payload)

    def transition(
        self,
        job_id: str,
        new: JobStatus,
        expect: Iterable[JobStatus] | None = None,
        writes: Writes | None = None,
        of_attempt: int | None = None,
        **values: Any,
    ) -> bool:
        """Change a job's status in the registry (compare-and-set from ``expect``;
        with ``of_attempt``, only while that is its attempt), then in Redis (with
        ``writes``: in it, for the caller to execute); False when the job was in
        another status by then.

        Raises:
            TransitionError: the lifecycle table does not allow the move.
        """
        if not self.registry.transition(
            job_id, new, expect=expect, of_attempt=of_attempt, **values
        ):
            return False
        if writes is None:
            self.live.set_job(job_id, **_live_fields(new, values))
        else:
            self.live.queue_set_job(writes, job_id, _live_fields(new, values))
        return True

    def place_jobs(self, placements: Sequence[JobPlacement], writes: Writes) -> list[bool]:
        """``transition`` queued -> placed of several jobs, each with its placement's
        columns, in one registry transaction (one commit: a dispatch pass's
        placements, ``ugro.registry.placing``), then, for each that took, its status
        in Redis as commands of ``writes`` (for the caller to execute). Returns,
        placement by placement, whether the job was still queued and is placed now.
        """
        placed = mark_placed(self.registry, placements)
        for (job_id, values), took in zip(placements, placed, strict=True):
            if took:
                self.live.queue_set_job(writes, job_id, _live_fields(JobStatus.PLACED, values))
        return placed

    def claim(
        self, job_id: str, expect: Iterable[JobStatus], token: str, **values: Any
    ) -> JobRow | None:
        """A worker's claim of a placed job in the registry: ``transition`` to running
        that starts its next attempt and hands back the row as it is now; None when
        it was claimed already, or placed again since under another lease ``token``.
        Redis hears of it from ``started``, once the job's process is up: the claim
        alone is what keeps the attempt from running twice."""
        return self.registry.claim(job_id, expect, token=token, **values)

    def place_and_claim(
        self, job_id: str, token: str, writes: Writes, **placed: Any
    ) -> JobRow | None:
        """For a job that the worker of its GPU takes at once (``dispatch.WorkerGpu``),
        whose leases start in the running window: its placement (``placed``: node,
        GPU indices, time) under lease ``token`` and the worker's claim in one
        commit, then in Redis the job running, with its first heartbeat, as commands
        of ``writes`` (for the caller to execute). None when it was not queued any
        more."""
        claim = claim_values()
        row = self.registry.place_and_claim(job_id, token, placed, claim)
        if row is None:
            return None
        live = _live_fields(JobStatus.RUNNING, {**placed, **claim})
        self.live.queue_set_job(writes, job_id, {**live, "started": time.time()})
        beat = {"node": row.node, "attempt": row.attempt}
        self.live.queue_heartbeat(writes, job_id, self.settings.lease_ttl, beat)
        return row

    def mark_running(self, row: JobRow, lease: tuple[str, list[int], str]) -> bool:
        """Mirror a claimed job's start in Redis, with its first heartbeat, and move
        its placement's leases (node, GPUs, holder) into the running window; False
        when another holds one of them."""
        live = _live_fields(JobStatus.RUNNING, claim_values())
        beat = {"node": row.node, "attempt": row.attempt}
        # started: for placement's backfill estimates
        return self.live.mark_running(
            row.id,
            self.settings.lease_ttl,
            beat,
            (*lease, row.attempt),
            started=time.time(),
            **live,
        )

    def end_attempt(
        self,
        job_id: str,
        number: int,
        attempt: dict[str, Any],
        new: JobStatus,
        expect: Iterable[JobStatus],
        release: tuple[str, list[int], str] | None = None,
        writes: Writes | None = None,
        **values: Any,
    ) -> list[str] | None:
        """Record an attempt's end and the job's new status together (one commit),
        then mirror the status in Redis, releasing the ``release`` leases (node,
        GPUs, holder) in the same round trip (with ``writes``: in it, for the caller
        to execute). Returns the jobs held waiting on this one, as the commit saw
        them (``ugro.scheduling.workflow.job_ended`` settles them); None when the
        status had changed (the leases are released all the same, at once).

        Raises:
            TransitionError: the lifecycle table does not allow the move (nothing is
                written, the attempt's end neither).
        """
        changed, waiting = self.registry.end_attempt_with_status(
            job_id, number, attempt, new, expect, **values
        )
        if changed and release is not None:
            self.live.release_and_set_job(
                *release, job_id, writes=writes, **_live_fields(new, values)
            )
        elif changed:
            self.live.set_job(job_id, **_live_fields(new, values))
        elif release is not None:
            self.live.leases.release(*release)
        return waiting if changed else None

    def close(self) -> None:
        self.registry.close()
        if self._live is not None:
            self._live.redis.close()


def claim_values() -> dict[str, Any]:
    """What a worker's claim sets besides the status: a new attempt starts now, and
    nothing of the last one's end is left."""
    return {
        "started_at": utcnow(),
        "finished_at": None,
        "exit_code": None,
        "exit_signal": None,
        "exit_reason": None,
        "error": None,
    }


def _live_fields(new: JobStatus, values: dict[str, Any]) -> dict[str, Any]:
    """The part of a status change that Redis mirrors."""
    live: dict[str, Any] = {"status": new.value}
    for key in ("node", "exit_code", "exit_reason"):
        if key in values:
            live[key] = values[key]
    if "gpu_indices" in values:
        live["gpus_held"] = values["gpu_indices"] or ""
    return live


def gpu_json(gpus: Iterable[int]) -> str:
    return json.dumps(list(gpus))
