"""Job: what the client hands back about one job."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from ugro.jobs.lifecycle import JobStatus
from ugro.jobs.paths import JobPaths
from ugro.progress.base import ProgressInfo
from ugro.progress.scan import OUTDATED, STUCK, is_outdated
from ugro.registry.models import JobRow, gpu_list, placement_of


class Job(BaseModel):
    id: str
    name: str
    kind: str
    status: JobStatus
    priority: int
    #: GPUs on each of its nodes.
    gpus: int
    #: Nodes it runs on at once: more than one for a gang job.
    num_nodes: int
    #: The node of its rank 0 (a gang job's first member's).
    node: str | None
    #: Every node of its placement, in rank order (none before it is placed).
    nodes: list[str]
    gpu_indices: list[int]
    attempt: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    exit_signal: int | None
    exit_reason: str | None
    error: str | None
    job_dir: Path
    #: The progress scan's last finding (None before the first scan of the job).
    progress: ProgressInfo | None = None
    #: running, finished, stuck, failed or outdated, from the progress scan.
    run_status: str | None = None
    #: A task of an array or sweep: its id there, and its index.
    array_id: str | None = None
    array_index: int | None = None
    #: A queued job kept from the queue: "after" (its dependencies) or "slot"
    #: (its array's max_running); ``Client.why_waiting`` says more.
    hold: str | None = None
    #: Who submitted it, and the group it counts for.
    user: str | None = None
    group: str | None = None
    #: A sweep point's parameters (``JobSpec.params``).
    params: dict[str, Any] = Field(default_factory=dict)
    #: Its labels (``JobSpec.tags``, ``--tag``).
    tags: list[str] = Field(default_factory=list)

    @classmethod
    def from_row(cls, row: JobRow, jobs_dir: Path, progress: str | None = None) -> Job:
        """The job of a registry row; ``progress`` (an encoded progress record)
        stands in for the row's when given."""
        return cls(
            id=row.id,
            name=row.name,
            kind=row.kind,
            status=JobStatus(row.status),
            priority=row.priority,
            gpus=row.gpus,
            **_from_spec(row.spec),
            node=row.node,
            nodes=[node for node, _ in placement_of(row)],
            gpu_indices=gpu_list(row),
            attempt=row.attempt,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            exit_code=row.exit_code,
            exit_signal=row.exit_signal,
            exit_reason=row.exit_reason,
            error=row.error,
            job_dir=JobPaths(jobs_dir, row.id).root,
            array_id=row.array_id,
            array_index=row.array_index,
            hold=row.hold,
            user=row.user,
            group=row.group_name,
            **_progress_fields(progress or row.progress),
        )

    @property
    def paths(self) -> JobPaths:
        """The files of the job's folder (``job_dir``)."""
        return JobPaths(self.job_dir.parent, self.id)

    @property
    def is_gang(self) -> bool:
        """Whether the job spans nodes (a gang job)."""
        return self.num_nodes > 1

    def shown_status(self, outdated_after: float, now: datetime | None = None) -> str:
        """The status people see: the lifecycle's, or a finding of the progress scan
        (``stuck``), or ``outdated`` for a job that finished more than
        ``outdated_after`` seconds before ``now``. A view, never a lifecycle state:
        an outdated job is a finished one seen through its age."""
        if self.run_status is not None and self.run_status in (STUCK, OUTDATED):
            return self.run_status
        if self.status is JobStatus.FINISHED and self.finished_at is not None:
            moment = (now or datetime.now(UTC)).timestamp()
            if is_outdated(self.finished_at.timestamp(), moment, outdated_after):
                return OUTDATED
        return self.status.value

    @property
    def done(self) -> bool:
        return self.status.is_terminal

    @property
    def succeeded(self) -> bool:
        return self.status is JobStatus.FINISHED

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or datetime.now(self.started_at.tzinfo)
        return (end - self.started_at).total_seconds()

    @property
    def failure_code(self) -> int:
        """The exit code a shell should see for this job: 0 when it succeeded."""
        if self.succeeded:
            return 0
        if self.exit_code:
            return self.exit_code
        if self.exit_signal:
            return 128 + self.exit_signal
        return 1

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _from_spec(spec: str) -> dict[str, Any]:
    """What a job shows of its stored spec: the nodes it asks for (a spec stored
    before gang jobs names none: one), a sweep point's parameters and its tags."""
    data = json.loads(spec)
    return {
        "num_nodes": int(data.get("nodes", 1)),
        "params": data.get("params") or {},
        "tags": data.get("tags") or [],
    }


def _progress_fields(encoded: str | None) -> dict[str, Any]:
    if not encoded:
        return {}
    data = json.loads(encoded)
    status = data.pop("status", None)
    return {"progress": ProgressInfo.model_validate(data), "run_status": status}
