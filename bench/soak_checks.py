"""The soak's checks (``bench.soak``): what README's "Reliability" promises, judged
on plain data read after the drain (``Ran``, one per job) and on what the sampler
saw while the soak ran. Each check passes or fails with the jobs and figures that
say why."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.faults import Sampler
from ugro import Client
from ugro.jobs.lifecycle import JobStatus
from ugro.jobs.spec import JobSpec

#: Jobs named in a failing check's detail, at most.
SHOWN = 5


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Ran:
    """One job as the registry and its folder tell it after the drain."""

    id: str
    status: JobStatus
    attempt: int
    max_retries: int
    nodes: int
    exit_reason: str | None
    #: The lines its processes wrote as they started: (attempt, node rank).
    starts: list[tuple[int, int]]
    metadata: dict[str, Any]


def collect(client: Client) -> list[Ran]:
    """Every job of the soak's registry, with its folder's starts and metadata."""
    ran = []
    for row in client.rt.registry.list_jobs():
        spec = JobSpec.model_validate_json(row.spec)
        paths = client.rt.paths(row.id)
        ran.append(
            Ran(
                id=row.id,
                status=JobStatus(row.status),
                attempt=row.attempt,
                max_retries=spec.max_retries,
                nodes=spec.nodes,
                exit_reason=row.exit_reason,
                starts=_starts(paths.root / "starts"),
                metadata=paths.read_metadata(),
            )
        )
    return ran


def _starts(path: Path) -> list[tuple[int, int]]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [(int(attempt), int(rank)) for attempt, rank in (line.split() for line in lines)]


def _listed(ids: list[str]) -> str:
    more = f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else ""
    return ", ".join(ids[:SHOWN]) + more


def ended(jobs: list[Ran]) -> Check:
    """Every job ended in a final status (finished, failed or cancelled)."""
    open_ = [f"{job.id} {job.status.value}" for job in jobs if not job.status.is_terminal]
    detail = f"not ended: {_listed(open_)}" if open_ else f"all {len(jobs)} jobs"
    return Check("every job ended in a final status", not open_, detail)


def within_retries(jobs: list[Ran]) -> Check:
    """No job ran more attempts than its retries allow (1 + max_retries)."""
    over = [
        f"{job.id} ({job.attempt} attempts, {job.max_retries} retries)"
        for job in jobs
        if job.attempt > job.max_retries + 1
    ]
    most = max((job.attempt for job in jobs), default=0)
    detail = f"over: {_listed(over)}" if over else f"at most {most} attempts"
    return Check("no job ran more attempts than its retries allow", not over, detail)


def each_attempt_started_once(jobs: list[Ran]) -> Check:
    """Each attempt's process started once on each of the job's nodes, never twice
    and never for an attempt the registry does not count; a finished job's last
    attempt started on every node. An attempt may have no start at all: one whose
    worker was killed between its claim and the start of its process."""
    wrong = []
    unstarted = 0
    for job in jobs:
        counts = Counter(job.starts)
        twice = sorted(start for start, n in counts.items() if n > 1)
        stray = sorted(
            (a, r) for a, r in counts if not (1 <= a <= job.attempt and 0 <= r < job.nodes)
        )
        missing = []
        if job.status is JobStatus.FINISHED:
            missing = [r for r in range(job.nodes) if (job.attempt, r) not in counts]
        if twice or stray or missing:
            wrong.append(f"{job.id} (twice {twice}, stray {stray}, last missing ranks {missing})")
        unstarted += len(set(range(1, job.attempt + 1)) - {a for a, _ in counts})
    starts = sum(len(job.starts) for job in jobs)
    detail = (
        f"wrong: {_listed(wrong)}"
        if wrong
        else f"{starts} starts; {unstarted} attempts ended before their process started"
    )
    return Check("no attempt ran twice", not wrong, detail)


def sampled(sampler: Sampler) -> list[Check]:
    """What the sampler saw at every moment: one attempt of a job at a time, one
    job on a GPU at a time, no more leases than GPUs."""
    twice = [f"{job} attempts {seen}" for job, seen in sampler.attempts_at_once.items()]
    shared = [f"{s.node} GPU {s.gpu} at {s.at} s: {s.jobs}" for s in sampler.shared_gpus]
    return [
        Check(
            "no job ran two attempts at once",
            not twice,
            f"seen: {_listed(twice)}" if twice else f"{sampler.samples} samples",
        ),
        Check(
            "no GPU leased to two jobs at once, leases <= GPUs",
            not shared and sampler.most_leases <= sampler.gpus,
            (f"shared: {_listed(shared)}; " if shared else "")
            + f"at most {sampler.most_leases} leases of {sampler.gpus} GPUs",
        ),
    ]


def no_orphans(left: dict[int, dict[str, str]]) -> Check:
    """No process of any job alive after the drain."""
    shown = [f"pid {pid} of {env['UGRO_JOB_ID']}" for pid, env in sorted(left.items())]
    return Check("no orphan process after the drain", not left, _listed(shown) if left else "none")


def registry_matches_tree(jobs: list[Ran]) -> Check:
    """Each job's metadata.json tells the registry's attempt and end."""
    differ = []
    for job in jobs:
        told = (job.metadata.get("attempt"), job.metadata.get("exit_reason"))
        if told != (job.attempt, job.exit_reason):
            differ.append(
                f"{job.id} (registry {job.status.value} attempt {job.attempt} "
                f"{job.exit_reason}; metadata.json attempt {told[0]} {told[1]})"
            )
    detail = f"differ: {_listed(differ)}" if differ else f"all {len(jobs)} jobs agree"
    return Check("the registry and the job trees agree", not differ, detail)


def services_up(beat_exit: int | None, workers: int, gpus: int) -> Check:
    """Beat and every GPU worker serve after the faults: a beat gone schedules no
    reconcile tick again, a worker missing from dispatch's view runs nothing."""
    beat = "beat runs" if beat_exit is None else f"beat exited ({beat_exit})"
    return Check(
        "beat and every GPU worker up after the faults",
        beat_exit is None and workers == gpus,
        f"{beat}; {workers} of {gpus} GPU workers seen by dispatch",
    )


def all_checks(
    jobs: list[Ran], sampler: Sampler, left: dict[int, dict[str, str]], services: Check
) -> list[Check]:
    return [
        services,
        ended(jobs),
        within_retries(jobs),
        each_attempt_started_once(jobs),
        *sampled(sampler),
        no_orphans(left),
        registry_matches_tree(jobs),
    ]


def as_json(checks: list[Check]) -> list[dict[str, Any]]:
    return [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in checks]


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)
