"""`python -m bench.cli`: how long the `ugro` commands people type all day take, as
whole processes (interpreter start, imports, the work, exit), against their targets.

It builds a data dir of 50 finished jobs through a real stack (`ugro up` on fake
GPUs, the jobs submitted through the client, `ugro down`), then, with the stack
down, runs each command once to warm the page cache and then ``--runs`` times,
timing each run's wall clock. Prints the median and the range of each, with
``python -c pass`` as the floor no command can go under; ``--save`` also writes
the runs as JSON lines to bench/results/, as ``bench.run`` does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.run import RESULTS, machine

UGRO = str(Path(sys.executable).parent / "ugro")
JOBS = 50
EPOCHS = 3

# A trainer that finishes at once: its epoch folders, with the files the trainer
# tracker expects, and a metrics record per epoch.
TRAINER = """
import json, os, ugro
root = os.environ["UGRO_JOB_DIR"]
for epoch in range({epochs}):
    folder = os.path.join(root, f"epoch_{{epoch}}")
    os.makedirs(folder)
    for name in ("training_losses.pt", "optimizer_buffer.json"):
        with open(os.path.join(folder, name), "w") as handle:
            handle.write("{{}}")
    with open(os.path.join(folder, "validation_scores.json"), "w") as handle:
        json.dump({{"accuracy": 0.5 + epoch / 10}}, handle)
    ugro.log_metrics(step=epoch, epoch=epoch, loss=1.0 / (epoch + 1))
"""


@dataclass(frozen=True)
class Command:
    """One command timed, with the wall time (s) its median must stay under."""

    label: str
    argv: list[str]
    target: float | None


def environment(data_dir: Path) -> dict[str, str]:
    """This shell's environment on ``data_dir``, with no other ugro setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UGRO_")}
    env.update(UGRO_DATA_DIR=str(data_dir), UGRO_GPU_BACKEND="fake:2")
    return env


def build(data_dir: Path, env: dict[str, str]) -> str:
    """``JOBS`` finished trainers in ``data_dir``, run by a real stack that is down
    again when this returns; the id of one of them."""
    from ugro import Client, JobSpec, Settings

    subprocess.run([UGRO, "up"], env=env, check=True, stdout=subprocess.DEVNULL)
    try:
        settings = Settings(data_dir=data_dir, gpu_backend=env["UGRO_GPU_BACKEND"])
        command = [sys.executable, "-c", TRAINER.format(epochs=EPOCHS)]
        specs = [
            JobSpec(name=f"train-{i}", command=command, epochs=EPOCHS, tags=["bench"])
            for i in range(JOBS)
        ]
        with Client(settings) as client:
            jobs = client.wait([job.id for job in client.submit_many(specs)], timeout=300)
        failed = [job for job in jobs if not job.succeeded]
        if failed:
            raise SystemExit(f"{len(failed)} bench job(s) did not finish, e.g. {failed[0]}")
    finally:
        subprocess.run([UGRO, "down"], env=env, check=True, stderr=subprocess.DEVNULL)
    return jobs[JOBS // 2].id


def existing_job(env: dict[str, str]) -> str | None:
    """The id of a job already in the data dir (one built before), if there is one."""
    found = subprocess.run(
        [UGRO, "list", "--json", "--limit", "1"], env=env, capture_output=True, text=True
    )
    if found.returncode != 0:
        return None
    jobs = json.loads(found.stdout)
    return str(jobs[0]["id"]) if jobs else None


def wall_times(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    """Seconds each of ``runs`` runs of ``argv`` took, after one untimed run."""
    times = []
    for run in range(runs + 1):
        began = time.perf_counter()
        done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        took = time.perf_counter() - began
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr!r}")
        if run:
            times.append(took)
    return times


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| command | median (s) | min-max (s) | target (s) | met |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        target = row["target"]
        met = "-" if target is None else ("yes" if row["median"] < target else "NO")
        lines.append(
            f"| {row['command']} | {row['median']:.3f} | {row['min']:.3f}-{row['max']:.3f} "
            f"| {'-' if target is None else f'< {target:.2f}'} | {met} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="build here and keep it; a data dir with jobs already is used as it is",
    )
    parser.add_argument("--save", action="store_true", help="write JSON lines to bench/results/")
    args = parser.parse_args()
    started = datetime.now(UTC)
    print(f"ugro CLI bench on {machine()}", flush=True)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="ugro-bench-cli-"))
    env = environment(data_dir.absolute())
    try:
        job_id = existing_job(env) if args.data_dir else None
        if job_id is None:
            print(f"building {JOBS} finished jobs in {data_dir} ...", flush=True)
            job_id = build(data_dir.absolute(), env)
        commands = [
            Command("python -c pass (floor)", [sys.executable, "-c", "pass"], None),
            Command("ugro --help", [UGRO, "--help"], 0.15),
            Command(f"ugro list ({JOBS} rows)", [UGRO, "list"], 0.35),
            Command("ugro status <id>", [UGRO, "status", job_id], 0.35),
        ]
        rows = []
        for command in commands:
            times = wall_times(command.argv, env, args.runs)
            rows.append(
                {
                    "command": command.label,
                    "median": statistics.median(times),
                    "min": min(times),
                    "max": max(times),
                    "target": command.target,
                    "runs": times,
                }
            )
    finally:
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    print()
    print(table(rows))
    if args.save:
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"{started:%Y%m%dT%H%M%SZ}-cli.jsonl"
        with out.open("w") as handle:
            for row in rows:
                handle.write(json.dumps({"started": started.isoformat(), **row}) + "\n")
        print(f"\nJSON lines: {out}")


if __name__ == "__main__":
    main()
