"""`python -m bench.sched [TRACE.csv]`: how well ugro schedules a real cluster's jobs.

A discrete-event replay of a job trace (CSV: ``job_id,submit_s,duration_s,gpus,nodes,
user``) on ``--nodes`` x ``--gpus-per-node`` GPUs, through ugro's own placement
code (dispatch's ``plan_on`` and ``plan_placements``, and beat's fair share
ranking: ``fair_order`` on ``decayed_usage``) and, in the same run, through
reference policies written here: strict FIFO, FIFO with EASY backfill, shortest
declared timeout first with EASY backfill, and shortest job first on the true
durations (an oracle).
Each job's timeout is what a user would declare: its duration rounded up to the
next hour. A job of more GPUs than a node has runs on whole nodes: ``nodes`` of
them (at least as many as it needs), the same number of GPUs on each; a job that
can never fit the cluster is skipped and counted. See ``bench.sched_policies``.

Reports per policy: job completion time (end - submit: average and median),
queueing delay (start - submit: average and p95), makespan (first submit to last
end), GPU utilisation (busy GPU-seconds over GPUs x makespan), each user's average
wait, Jain's fairness index over the users' average bounded slowdown
((wait + duration) / max(duration, 10 s), jobs with no user left out), the largest
wait of any job of more than one GPU, and the replay's wall time.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.sched_policies import (
    ETA_POLICIES,
    HALF_LIFE,
    POLICIES,
    PREEMPT_POLICIES,
    RESTART_COST,
    TICK,
    UGRO_POLICIES,
    WINDOW,
    Job,
    Replay,
)

TRACE = Path(__file__).resolve().parent.parent.parent / (
    "shared/data/traces/philly-week-2017-10-05.csv"
)
HOUR = 3600.0
SLOWDOWN_FLOOR = 10.0  # s: a job shorter than this counts as this long in a slowdown


def timeout_for(duration: float) -> float:
    """The ``--timeout`` a user would give: the duration rounded up to the next hour."""
    return max(1, math.ceil(duration / HOUR)) * HOUR


def load_trace(
    path: Path, nodes: int, gpus_per_node: int, limit: int | None = None
) -> tuple[list[Job], list[str]]:
    """The trace's jobs in submission order, and the ids of those skipped because
    they can never fit ``nodes`` x ``gpus_per_node`` GPUs."""
    rows: list[dict[str, str]] = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            rows.append(row)
            if limit is not None and len(rows) >= limit:
                break
    rows.sort(key=lambda row: float(row["submit_s"]))  # stable: the file's order at a tie
    jobs: list[Job] = []
    skipped: list[str] = []
    for row in rows:
        gpus = int(row["gpus"])
        spans = max(int(row.get("nodes") or 1), math.ceil(gpus / gpus_per_node))
        per_node = math.ceil(gpus / spans)
        if per_node > gpus_per_node or spans > nodes or gpus < 1:
            skipped.append(row["job_id"])
            continue
        duration = float(row["duration_s"])
        jobs.append(
            Job(
                index=len(jobs),
                job_id=row["job_id"],
                submit=float(row["submit_s"]),
                duration=duration,
                gpus=per_node,
                nodes=spans,
                user=row.get("user") or "",
                timeout=timeout_for(duration),
            )
        )
    return jobs, skipped


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index: 1.0 when all are equal, 1/n when one takes all."""
    if not values:
        return 1.0
    square = sum(v * v for v in values)
    return sum(values) ** 2 / (len(values) * square) if square else 1.0


@dataclass(frozen=True)
class Summary:
    """One policy's outcome; ``--json`` prints these fields."""

    policy: str
    avg_jct_s: float
    median_jct_s: float
    avg_queue_s: float
    p95_queue_s: float
    makespan_s: float
    utilisation: float
    fairness: float
    max_multi_gpu_wait_s: float


def per_user_wait(jobs: Sequence[Job], waits: Sequence[float]) -> dict[str, float]:
    """Each user's average queueing delay ("" for jobs with no user)."""
    by_user: dict[str, list[float]] = {}
    for job in jobs:
        by_user.setdefault(job.user, []).append(waits[job.index])
    return {user: statistics.fmean(w) for user, w in sorted(by_user.items())}


def summarise(policy: str, jobs: Sequence[Job], waits: Sequence[float], gpus: int) -> Summary:
    jcts = [w + j.duration for w, j in zip(waits, jobs, strict=True)]
    ordered = sorted(waits)
    first = min(j.submit for j in jobs)
    makespan = max(j.submit + jct for j, jct in zip(jobs, jcts, strict=True)) - first
    busy = sum(j.duration * j.total_gpus for j in jobs)
    slowdowns: dict[str, list[float]] = {}
    for wait, job in zip(waits, jobs, strict=True):
        if job.user:
            bounded = (wait + job.duration) / max(job.duration, SLOWDOWN_FLOOR)
            slowdowns.setdefault(job.user, []).append(bounded)
    multi = [w for w, j in zip(waits, jobs, strict=True) if j.total_gpus > 1]
    return Summary(
        policy=policy,
        avg_jct_s=statistics.fmean(jcts),
        median_jct_s=statistics.median(jcts),
        avg_queue_s=statistics.fmean(waits),
        p95_queue_s=ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)],
        makespan_s=makespan,
        utilisation=busy / (gpus * makespan) if makespan > 0 else 0.0,
        fairness=jain([statistics.fmean(s) for s in slowdowns.values()]),
        max_multi_gpu_wait_s=max(multi, default=0.0),
    )


@dataclass
class Outcome:
    summary: Summary
    waits: list[float]  # each job's, in the replay's order
    wall_s: float
    passes: int
    preemptions: int = 0
    stops: dict[int, int] = field(default_factory=dict)  # job index -> times stopped
    restart_cost_s: float = 0.0  # the run time a stopped job lost each time


def replay_all(
    jobs: Sequence[Job],
    nodes: int,
    gpus_per_node: int,
    policies: Sequence[str] = POLICIES,
    window: int = WINDOW,
    eta_error: float = 0.2,
    seed: int = 0,
    tick: float = TICK,
    half_life: float = HALF_LIFE,
    restart_cost: float = RESTART_COST,
    preemptible: float = 1.0,
) -> list[Outcome]:
    outcomes = []
    for policy in policies:
        began = time.perf_counter()
        replay = Replay(
            jobs,
            nodes,
            gpus_per_node,
            policy,
            window,
            eta_error,
            seed,
            tick,
            half_life,
            restart_cost,
            preemptible,
        )
        replay.run()
        wall = time.perf_counter() - began
        waits = replay.waits()
        summary = summarise(policy, jobs, waits, nodes * gpus_per_node)
        outcomes.append(
            Outcome(
                summary,
                waits,
                wall,
                replay.passes,
                replay.preemptions,
                dict(replay.stops),
                restart_cost,
            )
        )
    return outcomes


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def report(jobs: Sequence[Job], outcomes: Sequence[Outcome]) -> str:
    """The tables and the issue's targets, as Markdown."""
    main = _table(
        [
            "policy",
            "avg JCT (s)",
            "median JCT (s)",
            "avg queue (s)",
            "p95 queue (s)",
            "makespan (s)",
            "utilisation",
            "fairness",
            "max multi-GPU wait (s)",
            "replay (s)",
        ],
        [
            [
                o.summary.policy,
                f"{o.summary.avg_jct_s:,.0f}",
                f"{o.summary.median_jct_s:,.0f}",
                f"{o.summary.avg_queue_s:,.0f}",
                f"{o.summary.p95_queue_s:,.0f}",
                f"{o.summary.makespan_s:,.0f}",
                f"{o.summary.utilisation:.3f}",
                f"{o.summary.fairness:.3f}",
                f"{o.summary.max_multi_gpu_wait_s:,.0f}",
                f"{o.wall_s:.1f}",
            ]
            for o in outcomes
        ],
    )
    by_user = [per_user_wait(jobs, o.waits) for o in outcomes]
    users = _table(
        ["user (virtual cluster)", "jobs", *(o.summary.policy for o in outcomes)],
        [
            [user or "(none)", str(sum(1 for j in jobs if j.user == user))]
            + [f"{w[user]:,.0f}" for w in by_user]
            for user in by_user[0]
        ],
    )
    return f"{main}\n\nAverage queueing delay (s) by user:\n\n{users}\n\n" + "\n".join(
        targets(jobs, outcomes)
    )


def _ratio(a: float, b: float) -> float:
    if b > 0:
        return a / b
    return 1.0 if a <= 0 else math.inf


def targets(jobs: Sequence[Job], outcomes: Sequence[Outcome]) -> list[str]:
    """The issue's targets, each said met or not, for the policies present."""
    by = {o.summary.policy: o for o in outcomes}
    lines: list[str] = []
    easy, sjf = by.get("fifo-backfill"), by.get("sjf-oracle")
    for name in (*UGRO_POLICIES, "sjf-oracle"):
        own = by.get(name)
        if own is None:
            continue
        s = own.summary
        if name == "sjf-oracle":
            if easy is not None:  # (for comparison: what no real scheduler can do)
                lines.append(f"- {name}, for comparison: {_multi_gpu_waits(jobs, own, easy)}")
            continue
        if easy is not None:
            e = easy.summary
            ok = s.avg_queue_s <= e.avg_queue_s
            lines.append(
                f"- {name}: avg queue {s.avg_queue_s:,.0f} s against fifo-backfill's "
                f"{e.avg_queue_s:,.0f} s ({_ratio(s.avg_queue_s, e.avg_queue_s):.2f}x): "
                + ("met" if ok else "not met")
            )
            lines.append(f"- {name}: {_multi_gpu_waits(jobs, own, easy)}")
        if name in (*ETA_POLICIES, "ugro-short", *PREEMPT_POLICIES) and sjf is not None:
            ratio = _ratio(s.avg_queue_s, sjf.summary.avg_queue_s)
            lines.append(
                f"- {name}: avg queue {ratio:.2f}x sjf-oracle's "
                f"(target <= 1.3x: {'met' if ratio <= 1.3 else 'not met'})"
            )
        lines.append(
            f"- {name}: fairness {s.fairness:.3f} "
            f"(target >= 0.9: {'met' if s.fairness >= 0.9 else 'not met'})"
        )
        if name in PREEMPT_POLICIES:
            lines.append(f"- {name}: {preemption_cost(jobs, own)}")
    return lines


def _multi_gpu_waits(jobs: Sequence[Job], own: Outcome, easy: Outcome) -> str:
    """How a policy's multi-GPU jobs wait against EASY backfill's."""
    ratio = _ratio(own.summary.max_multi_gpu_wait_s, easy.summary.max_multi_gpu_wait_s)
    worse = sum(
        1 for j in jobs if j.total_gpus > 1 and own.waits[j.index] > 2 * easy.waits[j.index] + HOUR
    )
    return (
        f"largest multi-GPU wait {ratio:.2f}x fifo-backfill's "
        f"(target <= 2x: {'met' if ratio <= 2 else 'not met'}); multi-GPU jobs "
        f"waiting over 2x (+1 h) their fifo-backfill wait: {worse}"
    )


def preemption_cost(jobs: Sequence[Job], outcome: Outcome) -> str:
    """What a preempting policy's stops came to."""
    stops = sum(outcome.stops.values())
    if not stops:
        return "no job was preempted"
    lost = sum(n * jobs[i].total_gpus for i, n in outcome.stops.items()) * outcome.restart_cost_s
    run = sum(j.duration * j.total_gpus for j in jobs)
    return (
        f"{outcome.preemptions:,} preemptions stopped {len(outcome.stops):,} jobs "
        f"{stops:,} times (one job at most {max(outcome.stops.values())} times); at "
        f"{outcome.restart_cost_s:.0f} s a restart, {lost / HOUR:,.0f} GPU-hours lost, "
        f"{lost / run:.2%} of the trace's"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sched", description=__doc__.split("\n")[0]
    )
    parser.add_argument("trace", nargs="?", type=Path, default=TRACE)
    parser.add_argument("--nodes", type=int, default=160)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="one JSON object per policy")
    parser.add_argument(
        "--eta-error", type=float, default=0.2, help="ugro-eta's ETA error, +/- this share"
    )
    parser.add_argument("--seed", type=int, default=0, help="of the ETA errors")
    parser.add_argument("--limit", type=int, help="replay only the trace's first N jobs")
    parser.add_argument(
        "--window", type=int, default=WINDOW, help="jobs at the head of the queue a pass reads"
    )
    parser.add_argument(
        "--tick",
        type=float,
        default=TICK,
        help="beat's dispatch interval (s): fair share ranks the queue this often",
    )
    parser.add_argument(
        "--half-life", type=float, default=HALF_LIFE, help="fair share's usage half-life (s)"
    )
    parser.add_argument(
        "--restart-cost",
        type=float,
        default=RESTART_COST,
        help="ugro-preempt: the run time (s) a stopped job loses each time",
    )
    parser.add_argument(
        "--preemptible",
        type=float,
        default=1.0,
        help="ugro-preempt: the share of jobs submitted --preemptible, chosen at random",
    )
    parser.add_argument(
        "--policy", action="append", choices=POLICIES, help="only this one (repeatable)"
    )
    args = parser.parse_args(argv)
    jobs, skipped = load_trace(args.trace, args.nodes, args.gpus_per_node, args.limit)
    if not jobs:
        parser.error(f"{args.trace}: no job fits {args.nodes} x {args.gpus_per_node} GPUs")
    outcomes = replay_all(
        jobs,
        args.nodes,
        args.gpus_per_node,
        args.policy or POLICIES,
        args.window,
        args.eta_error,
        args.seed,
        args.tick,
        args.half_life,
        args.restart_cost,
        args.preemptible,
    )
    walls = ", ".join(f"{o.summary.policy} {o.wall_s:.1f} s" for o in outcomes)
    if args.json:
        print(json.dumps([asdict(o.summary) for o in outcomes], indent=2))
        print(f"replay wall time: {walls}", file=sys.stderr)
        return 0
    print(
        f"{args.trace.name}: {len(jobs):,} jobs replayed, {len(skipped)} skipped "
        f"(never fit){': ' + ', '.join(skipped[:10]) if skipped else ''}; "
        f"{args.nodes} x {args.gpus_per_node} GPUs; a pass reads the first {args.window} "
        f"waiting jobs; ETA error +/- {args.eta_error:.0%}\n"
    )
    print(report(jobs, outcomes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
