"""Arrays and sweeps: many tasks submitted as one, and read and acted on as one.

An array is one id and N tasks, ``<array>-<index>``: each a job of its own (its
tree, its attempts), whose argv had ``{index}`` (a sweep's: each parameter's
``{name}``) filled in. ``max_running`` caps how many run at once: the others are
held until a slot frees (``ugro.scheduling.workflow``), so dispatch never reads
them. A sweep is an array whose tasks carry their parameters (``JobSpec.params``:
in config.json and the job's environment).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from ugro.job import Job
from ugro.jobs.lifecycle import TERMINAL, JobStatus
from ugro.jobs.spec import ArrayPlace, JobSpec, new_job_id
from ugro.jobs.sweep import Scalar, substitute
from ugro.registry.models import ArrayRow


@dataclass
class JobArray:
    """An array (or sweep) as it is now: its tasks in index order."""

    id: str
    name: str
    kind: str  # "array" | "sweep"
    count: int
    max_running: int | None
    created_at: datetime
    params: list[str] = field(default_factory=list)  # a sweep's parameter names
    tasks: list[Job] = field(default_factory=list)

    @classmethod
    def of(cls, row: ArrayRow, tasks: list[Job], params: list[str]) -> JobArray:
        return cls(
            row.id, row.name, row.kind, row.count, row.max_running, row.created_at, params, tasks
        )

    @property
    def counts(self) -> dict[str, int]:
        """Tasks by status (``queued``, ``running``, ``finished``...)."""
        return dict(Counter(task.status.value for task in self.tasks))

    @property
    def status(self) -> JobStatus:
        """The array's status as one: running while a task runs or waits, else
        finished when every task finished, failed when one failed, else cancelled."""
        statuses = {task.status for task in self.tasks}
        if not statuses <= TERMINAL:
            active = statuses - TERMINAL
            for status in (JobStatus.RUNNING, JobStatus.PLACED, JobStatus.LOST):
                if status in active:
                    return status
            return JobStatus.QUEUED
        if statuses == {JobStatus.FINISHED}:
            return JobStatus.FINISHED
        return JobStatus.FAILED if JobStatus.FAILED in statuses else JobStatus.CANCELLED

    @property
    def done(self) -> bool:
        return self.status.is_terminal

    @property
    def progress(self) -> float:
        """The share of its tasks' work done (0 to 1): an ended task counts whole,
        a running one as far as its progress says."""
        if not self.tasks:
            return 0.0
        total = 0.0
        for task in self.tasks:
            if task.done:
                total += 1.0
            elif task.progress is not None:
                total += min(task.progress.percent, 100.0) / 100.0
        return total / len(self.tasks)

    def summary(self) -> str:
        """``3 running, 5 queued, 42 finished``: the counts, busiest first."""
        order = ["running", "placed", "lost", "queued", "finished", "failed", "cancelled"]
        counts = self.counts
        return ", ".join(f"{counts[s]} {s}" for s in order if counts.get(s))


def array_specs(template: JobSpec, indices: Sequence[int]) -> tuple[str, list[JobSpec]]:
    """A new array's id and its tasks' specs: ``template`` with ``{index}`` filled
    in its argv, each task knowing its place."""
    array_id = new_job_id(template.name)
    specs = [
        template.model_copy(
            update={
                "command": substitute(template.command, {"index": index}),
                "array": ArrayPlace(id=array_id, index=index, count=len(indices)),
            }
        )
        for index in indices
    ]
    return array_id, specs


def point_specs(
    template: JobSpec, points: Sequence[tuple[dict[str, Scalar], list[str]]], array_id: str
) -> list[JobSpec]:
    """A sweep's tasks' specs: ``template`` with each point's argv and parameters."""
    return [
        template.model_copy(
            update={
                "command": command,
                "params": params,
                "array": ArrayPlace(id=array_id, index=index, count=len(points)),
            }
        )
        for index, (params, command) in enumerate(points)
    ]
