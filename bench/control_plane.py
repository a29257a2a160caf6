"""`python -m bench.control_plane` (W6): the control plane at a large lab's scale.

    python -m bench.control_plane [--nodes 100] [--gpus-per-node 8]
        [--queued 10000,50000] [--registries sqlite,postgresql] [--samples 50]
        [--ticks 3] [--json]

Each registry gets two simulated clusters side by side, each with its own embedded
Redis (``ugro.ops.redis_server``) and its own registry: SQLite in its data dir, or
on PostgreSQL a schema of a database made for the run and dropped however the run
ends. A cluster is ``--nodes`` x ``--gpus-per-node`` GPUs and no worker process:
a GPU is its presence record in the ``workers`` hash, as a GPU worker's presence
thread writes it (``ugro.live.presence``). Those records are refreshed, with the
running jobs' lease renewals and heartbeats, whenever a third of their time to
live has passed, between samples so that no refresh lands inside one. A placed
job's message goes to a GPU queue nobody consumes; the benchmark takes the job up
as that GPU's worker would (the claim, the start in Redis and in the registry) and
ends it the same way (``ugro.execution.attempt_end.record_end``, then the
worker's own ``dispatch_pending`` with its GPU).

Both clusters start with every GPU running a job (1/2/4/8-GPU jobs packed so that
none is left free). On one nothing else waits ("empty"); on the other jobs are
queued (``Client.submit_many``, one client a user, batches of the users in turn;
1, 2, 4 and 8 GPUs in proportions 4:3:2:1; timeouts of 1, 4 or 24 hours or none)
up to each length of ``--queued``. Beat's tick (the fair-share ranking, then a
pass) runs ``--ticks`` times, then ``--samples`` rounds time, on the queued
cluster:

1. a dispatch pass that finds nothing to place: every GPU busy (it stops at its
   snapshot), or the free ones held back for waiting jobs' reservations (it plans
   on the head of the queue); reported apart too;
2. a GPU freed to its next job's placement: a running job, picked at random, ends
   as its worker ends it; timed from the worker's ``dispatch_pending``, whose first
   round trip lets the lease go, to its return with the next job placed on that
   GPU (taken for the worker itself, or placed there by a pass). A GPU left free
   (kept for a bigger job's reservation) is counted, not timed. The end's own
   registry write before it is timed apart (``end_ms``);
3. a pass after ``ENDS_PER_PASS`` jobs ended without one (their workers' requests
   left to the lock's holder), which places jobs on what they freed;
4. ``Client.submit`` of one job on each cluster, alternately (empty, queued, queued,
   empty...), so that the machine's drift weighs on both alike. Each job is
   cancelled once timed: every submit finds the queue as long as the last. The
   queued cluster's are reported apart too by whether some GPU stood free (then
   a submit that queues runs a pass).

Prints one table (``--json``: one JSON object) and the targets: a pass under 50 ms
(p50) with the largest queue, and submit p50 there within 1.2x of the empty
queue's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.adapters import workdir
from bench.run import machine
from bench.simulated_cluster import TIMEOUTS, USERS, Shape, SimulatedCluster
from bench.workloads import percentile
from ugro import JobSpec
from ugro.jobs.lifecycle import JobStatus
from ugro.scheduling.dispatch import dispatch_pending
from ugro.scheduling.fair_share import rank_queue

#: Jobs that end before the timed pass that places jobs on what they freed.
ENDS_PER_PASS = 8
PASS_TARGET_MS = 50.0
SUBMIT_RATIO_TARGET = 1.2
REGISTRIES = ("sqlite", "postgresql")
PG_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=2"


# Measurements --------------------------------------------------------------------------


#: What became of a GPU freed by its job's end (``SimulatedCluster.end``).
OUTCOMES = ("claimed", "sent", "free")


@dataclass
class Samples:
    """What the rounds at one queue length measured."""

    idle_pass_ms: list[float] = field(default_factory=list)
    free_seen: list[int] = field(default_factory=list)  # free GPUs an idle pass saw
    idle_placed: int = 0  # jobs those passes placed all the same (0 when all is well)
    placing_pass_ms: list[float] = field(default_factory=list)
    placed: list[int] = field(default_factory=list)  # jobs a placing pass placed
    freed_to_placed_ms: list[float] = field(default_factory=list)
    end_ms: list[float] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    submit_ms: dict[str, list[float]] = field(default_factory=lambda: {"empty": [], "queued": []})
    free_at_submit: list[int] = field(default_factory=list)  # on the queued cluster
    rank_ms: list[float] = field(default_factory=list)
    tick_pass_ms: list[float] = field(default_factory=list)


def idle_pass(cluster: SimulatedCluster, into: Samples) -> None:
    began = time.perf_counter()
    placed = dispatch_pending(cluster.rt)
    into.idle_pass_ms.append((time.perf_counter() - began) * 1000)
    seen = cluster.rt.live.dispatch.last_seen
    into.free_seen.append(0 if seen is None else sum(h is None for h in seen.holders.values()))
    if placed:
        into.idle_placed += placed
        cluster.take_up_placed()


def freed_to_placed(cluster: SimulatedCluster, into: Samples) -> None:
    end_ms, placed_ms, outcome = cluster.end(cluster.random_running(), dispatch=True)
    into.end_ms.append(end_ms)
    into.outcomes[outcome] += 1
    if outcome != "free":
        into.freed_to_placed_ms.append(placed_ms)


def placing_pass(cluster: SimulatedCluster, into: Samples) -> None:
    # (all of them on a cluster that runs fewer: the small sizes of the tests)
    for _ in range(min(ENDS_PER_PASS, len(cluster.running))):
        cluster.end(cluster.random_running(), dispatch=False)
    began = time.perf_counter()
    placed = dispatch_pending(cluster.rt)
    into.placing_pass_ms.append((time.perf_counter() - began) * 1000)
    into.placed.append(placed)
    cluster.take_up_placed()


def submit_ms(cluster: SimulatedCluster, spec: JobSpec, user: str) -> float:
    """One ``Client.submit``, timed; the job is cancelled after, untimed."""
    client = cluster.clients[user]
    began = time.perf_counter()
    job = client.submit(spec)
    took = (time.perf_counter() - began) * 1000
    if job.status is not JobStatus.QUEUED:
        raise RuntimeError(f"a submit found a GPU free: {job.id} is {job.status.value}")
    client.cancel(job.id)
    return took


def beat_tick(cluster: SimulatedCluster, into: Samples) -> None:
    """Beat's dispatch tick (``ugro.tasks``): the fair-share ranking, then a pass."""
    began = time.perf_counter()
    rank_queue(cluster.rt)
    ranked = time.perf_counter()
    if dispatch_pending(cluster.rt):
        cluster.take_up_placed()
    into.rank_ms.append((ranked - began) * 1000)
    into.tick_pass_ms.append((time.perf_counter() - ranked) * 1000)


def measure(empty: SimulatedCluster, queued: SimulatedCluster, samples: int, ticks: int) -> Samples:
    """``ticks`` beat ticks, then ``samples`` rounds of every measurement."""
    found = Samples()
    for _ in range(ticks):
        beat_tick(queued, found)
        queued.keep_alive()
    for i in range(samples):
        for step in (idle_pass, freed_to_placed, placing_pass):
            queued.keep_alive()
            empty.keep_alive()
            step(queued, found)
        sizes = queued.shape.job_gpus
        spec = queued.spec(sizes[i % len(sizes)], TIMEOUTS[i % len(TIMEOUTS)])
        user = USERS[i % len(USERS)]
        found.free_at_submit.append(queued.free_gpus())
        pair = (("empty", empty), ("queued", queued))
        for label, cluster in pair if i % 2 == 0 else pair[::-1]:
            found.submit_ms[label].append(submit_ms(cluster, spec, user))
    return found


# Registries ----------------------------------------------------------------------------


@contextlib.contextmanager
def registry_urls(registry: str, dsn: str = PG_DSN) -> Iterator[Callable[[str], str | None]]:
    """The database URL of each cluster (by name) on ``registry``: None (SQLite in its
    data dir), or a schema of a PostgreSQL database made here and dropped after."""
    if registry == "sqlite":
        yield lambda name: None
        return
    import psycopg
    from psycopg import sql

    params = dict(part.split("=", 1) for part in dsn.split())
    database = f"ugro_bench_w6_{os.getpid()}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    try:
        made: set[str] = set()

        def url(name: str) -> str:
            if name not in made:
                with psycopg.connect(dsn, dbname=database, autocommit=True) as conn:
                    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
                made.add(name)
            return (
                f"postgresql+psycopg://{params['user']}@{params['host']}:{params['port']}"
                f"/{database}?options=-csearch_path%3D{name}"
            )

        yield url
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            conn.execute(drop.format(sql.Identifier(database)))


def postgres_answers(dsn: str = PG_DSN) -> str | None:
    """None when the PostgreSQL server answers, else why not."""
    try:
        import psycopg

        psycopg.connect(dsn).close()
    except Exception as exc:
        return f"no PostgreSQL server ({str(exc).strip().splitlines()[0]})"
    return None


# The run -------------------------------------------------------------------------------


def say(message: str) -> None:
    print(f"  W6 {message}", file=sys.stderr, flush=True)


def run_registry(
    root: Path,
    registry: str,
    shape: Shape,
    levels: list[int],
    samples: int,
    ticks: int,
    seed: int,
) -> dict[str, Any]:
    """Both clusters on ``registry`` (their data dirs under ``root``), every queue
    length measured in turn."""
    root.mkdir()
    clusters: list[SimulatedCluster] = []
    result: dict[str, Any] = {"levels": []}
    try:
        with registry_urls(registry) as url:
            for name in ("empty", "queued"):
                cluster = SimulatedCluster(root / name, url(name), shape, seed)
                clusters.append(cluster)
                cluster.start()
                began = time.monotonic()
                cluster.fill_gpus()
                took = time.monotonic() - began
                say(f"{registry} {name}: {len(cluster.running)} jobs on every GPU, {took:.1f} s")
            empty, queued = clusters
            for length in levels:
                began = time.monotonic()
                missing = length - queued.queued()
                queued.submit_in_batches([queued.spec() for _ in range(missing)])
                filled = time.monotonic() - began
                say(f"{registry}: {length:,} queued in {filled:.1f} s")
                before = queued.queued()
                found = measure(empty, queued, samples, ticks)
                level = report_level(length, found, filled, missing)
                level["queued_range"] = sorted((before, queued.queued()))
                result["levels"].append(level)
                say(
                    f"{registry} {length:,}: pass {level['idle_pass_ms']['p50']:.1f} ms,"
                    f" placing {level['placing_pass_ms']['p50']:.1f} ms, freed->placed"
                    f" {level['freed_to_placed_ms'].get('p50', 0):.1f} ms, submit"
                    f" {level['submit_ms']['queued']['p50']:.1f} /"
                    f" {level['submit_ms']['empty']['p50']:.1f} ms (empty)"
                )
    finally:
        for cluster in clusters:
            cluster.stop()
    return result


def run(
    shape: Shape,
    levels: list[int],
    registries: list[str],
    samples: int,
    ticks: int = 3,
    seed: int = 6,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "machine": machine(),
        "nodes": shape.nodes,
        "gpus_per_node": shape.gpus_per_node,
        "gpus": shape.nodes * shape.gpus_per_node,
        "queued": levels,
        "samples": samples,
        "ends_per_pass": ENDS_PER_PASS,
        "registries": {},
    }
    # Every tree is kept until the run's end: on an ext4 without a journal, deleting
    # one registry's hundreds of thousands of inodes would slow the next one's
    # creating its own (see bench/run.py).
    root = workdir()
    try:
        for registry in registries:
            why = postgres_answers() if registry == "postgresql" else None
            if why is not None:
                result["registries"][registry] = {"skipped": why}
                say(f"{registry} skipped: {why}")
                continue
            measured = run_registry(root / registry, registry, shape, levels, samples, ticks, seed)
            result["registries"][registry] = measured
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result["targets"] = targets(result)
    return result


# The report ----------------------------------------------------------------------------


def figures(values: list[float]) -> dict[str, float]:
    if not values:
        return {"samples": 0}
    return {
        "p50": statistics.median(values),
        "p95": percentile(values, 95),
        "min": min(values),
        "max": max(values),
        "samples": len(values),
    }


def by_free_gpus(values: list[float], free: list[int]) -> dict[str, Any]:
    """``values`` split by whether some GPU was free as each was taken (``free``):
    with none, a pass stops at its snapshot; with one, it plans on the queue's
    head, and a submit that queues runs a pass."""
    return {
        "every_gpu_busy": figures([v for v, n in zip(values, free, strict=True) if n == 0]),
        "some_gpu_free": figures([v for v, n in zip(values, free, strict=True) if n > 0]),
    }


def report_level(length: int, found: Samples, fill_s: float, filled: int) -> dict[str, Any]:
    submit: dict[str, Any] = {label: figures(values) for label, values in found.submit_ms.items()}
    submit["queued"] |= by_free_gpus(found.submit_ms["queued"], found.free_at_submit)
    ratio = submit["queued"]["p50"] / submit["empty"]["p50"]
    idle = figures(found.idle_pass_ms) | by_free_gpus(found.idle_pass_ms, found.free_seen)
    return {
        "queued": length,
        "fill_s": fill_s,
        "fill_jobs_per_s": filled / fill_s if fill_s > 0 and filled > 0 else None,
        "idle_pass_ms": idle
        | {"free_gpus_max": max(found.free_seen), "placed_total": found.idle_placed},
        "placing_pass_ms": figures(found.placing_pass_ms)
        | {"placed_mean": statistics.mean(found.placed)},
        "freed_to_placed_ms": figures(found.freed_to_placed_ms) | {"outcomes": found.outcomes},
        "end_ms": figures(found.end_ms),
        "submit_ms": submit | {"ratio_p50": ratio},
        "rank_ms": figures(found.rank_ms),
        "tick_pass_ms": figures(found.tick_pass_ms),
    }


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, at the largest queue length, by registry."""
    found: dict[str, Any] = {}
    for registry, measured in result["registries"].items():
        if "levels" not in measured or not measured["levels"]:
            continue
        top = measured["levels"][-1]
        worst_pass = max(top["idle_pass_ms"]["p50"], top["placing_pass_ms"]["p50"])
        ratio = top["submit_ms"]["ratio_p50"]
        found[registry] = {
            "queued": top["queued"],
            "pass_p50_ms": worst_pass,
            "pass_met": worst_pass < PASS_TARGET_MS,
            "submit_ratio_p50": ratio,
            "submit_met": ratio <= SUBMIT_RATIO_TARGET,
        }
    return found


def cell(row: dict[str, Any]) -> str:
    return f"{row['p50']:.2f} ({row['p95']:.2f})" if row.get("samples") else "-"


def counted(row: dict[str, Any]) -> str:
    """A cell of a subset of the samples, with how many they are."""
    return f"{cell(row)}, {row['samples']}x" if row.get("samples") else "-"


def render(result: dict[str, Any]) -> str:
    columns = [
        (registry, level)
        for registry, measured in result["registries"].items()
        for level in measured.get("levels", [])
    ]
    lines = [
        f"W6 control plane: {result['nodes']} nodes x {result['gpus_per_node']} GPUs,"
        f" {result['samples']} samples each, on {result['machine']}",
        "",
        "| ms, p50 (p95) | " + " | ".join(f"{r} {lv['queued']:,}" for r, lv in columns) + " |",
        "| --- |" + " --- |" * len(columns),
    ]
    rows: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
        ("pass, nothing to place", lambda lv: cell(lv["idle_pass_ms"])),
        ("- every GPU busy", lambda lv: counted(lv["idle_pass_ms"]["every_gpu_busy"])),
        ("- some GPU free, held back", lambda lv: counted(lv["idle_pass_ms"]["some_gpu_free"])),
        (f"pass after {ENDS_PER_PASS} ends", lambda lv: cell(lv["placing_pass_ms"])),
        ("jobs it placed (mean)", lambda lv: f"{lv['placing_pass_ms']['placed_mean']:.1f}"),
        ("GPU freed -> next job placed", lambda lv: cell(lv["freed_to_placed_ms"])),
        (
            "claimed / sent / left free",
            lambda lv: " / ".join(str(lv["freed_to_placed_ms"]["outcomes"][o]) for o in OUTCOMES),
        ),
        ("the end's records before it", lambda lv: cell(lv["end_ms"])),
        ("submit, queue empty", lambda lv: cell(lv["submit_ms"]["empty"])),
        ("submit, this queue", lambda lv: cell(lv["submit_ms"]["queued"])),
        ("- every GPU busy", lambda lv: counted(lv["submit_ms"]["queued"]["every_gpu_busy"])),
        ("- some GPU free", lambda lv: counted(lv["submit_ms"]["queued"]["some_gpu_free"])),
        ("submit p50 ratio", lambda lv: f"{lv['submit_ms']['ratio_p50']:.2f}x"),
        ("beat: fair-share ranking", lambda lv: cell(lv["rank_ms"])),
        ("beat: its pass", lambda lv: cell(lv["tick_pass_ms"])),
        ("fill (jobs/s)", lambda lv: f"{lv['fill_jobs_per_s'] or 0:,.0f}"),
    )
    for title, show in rows:
        lines.append(f"| {title} | " + " | ".join(show(lv) for _, lv in columns) + " |")
    for registry, measured in result["registries"].items():
        if "skipped" in measured:
            lines += ["", f"{registry}: skipped, {measured['skipped']}"]
    lines += ["", "| registry | target | measured | met |", "| --- | --- | --- | --- |"]
    for registry, met in result["targets"].items():
        queued = f"{met['queued']:,}"
        lines.append(
            f"| {registry} | pass p50 < {PASS_TARGET_MS:g} ms at {queued} queued"
            f" | {met['pass_p50_ms']:.2f} ms | {'yes' if met['pass_met'] else 'no'} |"
        )
        lines.append(
            f"| {registry} | submit p50 at {queued} <= {SUBMIT_RATIO_TARGET:g}x empty"
            f" | {met['submit_ratio_p50']:.2f}x | {'yes' if met['submit_met'] else 'no'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument(
        "--queued", default="10000,50000", help="queue lengths, ascending (default 10000,50000)"
    )
    parser.add_argument("--registries", default=",".join(REGISTRIES))
    parser.add_argument("--samples", type=int, default=50, help="rounds a queue length")
    parser.add_argument("--ticks", type=int, default=3, help="beat ticks a queue length")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--json", action="store_true", help="the report as one JSON object")
    args = parser.parse_args(argv)
    levels = [int(n.replace("_", "")) for n in args.queued.split(",")]
    registries = args.registries.split(",")
    shape = Shape(args.nodes, args.gpus_per_node)
    if levels != sorted(levels) or levels[0] < 1 or args.samples < 1 or args.ticks < 0:
        parser.error("--queued: ascending lengths >= 1; --samples >= 1; --ticks >= 0")
    if shape.nodes < 1 or shape.gpus_per_node < 1 or set(registries) - set(REGISTRIES):
        parser.error(f"--nodes, --gpus-per-node >= 1; --registries of {', '.join(REGISTRIES)}")
    # A stop (SIGTERM) goes through the clean-up: servers stopped, database dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    began = time.monotonic()
    result = run(shape, levels, registries, args.samples, args.ticks, args.seed)
    result["seconds"] = round(time.monotonic() - began, 1)
    if args.json:
        print(json.dumps(result, indent=2), flush=True)
    else:
        print(render(result) + f"\n\n{result['seconds']:.0f} s in all", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
