"""`python -m bench.registry`: the CPU a job's registry calls cost on SQLite, with
the prebuilt statements on the sqlite3 cursor (``ugro.registry.direct``) and all
through SQLAlchemy, alternated in one run; prints the medians and their ratio.

A job's life here is the calls that submit, place, start and end it make: its
row inserted as a submit writes it, the held GPUs read, its place-and-claim, its
attempt's start, its end with its status, and one read of it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from ugro.jobs.lifecycle import JobStatus
from ugro.jobs.spec import JobSpec
from ugro.registry.models import utcnow
from ugro.registry.store import Registry
from ugro.runtime import claim_values
from ugro.scheduling.submit import queued_row


def job_life(registry: Registry, job_id: str) -> None:
    registry.create_jobs([queued_row(job_id, JobSpec(name="bench", command=["true"]), utcnow())])
    registry.held_gpus()
    placed = {"node": "n", "gpu_indices": "[0]", "placed_at": utcnow()}
    registry.place_and_claim(job_id, "token", placed, claim_values())
    registry.start_attempt(
        job_id=job_id, number=1, node="n", host="h", gpu_indices="[0]", pid=1, started_at=utcnow()
    )
    ended = {"ended_at": utcnow(), "exit_code": 0, "exit_reason": "ok"}
    registry.end_attempt_with_status(
        job_id, 1, ended, JobStatus.FINISHED, [JobStatus.RUNNING], finished_at=utcnow()
    )
    registry.get_job(job_id)


def cpu_per_job(registry: Registry, prefix: str, jobs: int) -> float:
    """µs of this process's CPU per job's life."""
    began = time.process_time()
    for i in range(jobs):
        job_life(registry, f"{prefix}-{i}")
    return (time.process_time() - began) / jobs * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ugro-bench-registry-") as where:
        registries = {}
        for name, direct in (("direct", True), ("sqlalchemy", False)):
            registry = Registry(f"sqlite:///{Path(where) / name}.sqlite3")
            registry.connections.direct = direct
            cpu_per_job(registry, "warm", 200)  # compiled statements, page cache
            registries[name] = registry
        figures: dict[str, list[float]] = {name: [] for name in registries}
        for repeat in range(args.repeats):
            for name, registry in registries.items():
                figures[name].append(cpu_per_job(registry, f"r{repeat}", args.jobs))
        for registry in registries.values():
            registry.close()
    medians = {name: statistics.median(values) for name, values in figures.items()}
    for name, values in figures.items():
        print(
            f"{name:<10} {medians[name]:6.0f} µs CPU per job's registry calls"
            f" ({min(values):.0f}-{max(values):.0f})"
        )
    print(f"direct/sqlalchemy: {medians['direct'] / medians['sqlalchemy']:.2f}x")


if __name__ == "__main__":
    main()
