"""`ugro demo`: a private stack on simulated GPUs, a small sweep, a result table."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from ugro.client import Client
from ugro.errors import StackError
from ugro.job import Job
from ugro.settings import Settings
from ugro.spec import JobSpec
from ugro.stack import Stack

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LEARNING_RATES = ["0.01", "0.03", "0.1", "0.3", "1.0", "3.0"]
EPOCHS = 8

console = Console(stderr=True, highlight=False)


def sweep(python: str) -> list[JobSpec]:
    """Six trainers over learning rates and three evaluators."""
    train, evaluate = str(EXAMPLES / "train.py"), str(EXAMPLES / "evaluate.py")
    specs = [
        JobSpec(
            name=f"train-lr{lr}",
            kind="train",
            epochs=EPOCHS,
            tags=["demo"],
            command=[python, train, "--lr", lr, "--epochs", str(EPOCHS), "--epoch-seconds", "0.4"],
        )
        for lr in LEARNING_RATES
    ]
    specs += [
        JobSpec(
            name=f"eval-seed{seed}",
            kind="eval",
            tags=["demo"],
            command=[python, evaluate, "--seed", str(seed), "--seconds", "1"],
        )
        for seed in range(3)
    ]
    return specs


def read_progress(job: Job) -> tuple[int | None, float | None]:
    """(epochs completed, best validation accuracy) from the job's metrics.jsonl."""
    epochs, best = None, None
    metrics = job.job_dir / "metrics.jsonl"
    try:
        lines = metrics.read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    for line in lines:
        record = json.loads(line)
        if "epoch" in record:
            epochs = int(record["epoch"]) + 1
        if "val_accuracy" in record:
            best = max(best or 0.0, float(record["val_accuracy"]))
    scores = job.job_dir / "evaluation_scores.json"
    if scores.exists():
        best = float(json.loads(scores.read_text(encoding="utf-8"))["accuracy"])
    return epochs, best


def _table(jobs: list[Job], final: bool) -> Table:
    title = "ugro demo: results" if final else "ugro demo: running"
    table = Table(title=title, header_style="bold")
    for column in ("name", "status", "node/GPU", "progress", "best score", "duration"):
        table.add_column(column)
    for job in jobs:
        epochs, best = read_progress(job)
        if job.kind == "train":
            progress = f"{epochs or 0}/{EPOCHS} epochs"
        else:
            progress = "done" if best is not None else "-"
        where = f"{job.node}/{','.join(map(str, job.gpu_indices))}" if job.node else "-"
        duration = f"{job.duration:.1f} s" if job.duration is not None else "-"
        table.add_row(
            job.name,
            job.status.value,
            where,
            progress,
            "-" if best is None else f"{best:.3f}",
            duration,
        )
    return table


def run_demo(data_dir: str | None, gpus: int) -> int:
    """Run the demo end to end; the exit code is 0 when every job finished."""
    if not (EXAMPLES / "train.py").exists():
        raise StackError(f"the examples are missing from {EXAMPLES}: run from a ugro checkout")
    root = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="ugro-demo-"))
    # The demo runs on the embedded defaults, whatever this shell points at.
    for name in ("UGRO_REDIS_URL", "UGRO_DATABASE_URL"):
        os.environ.pop(name, None)
    os.environ["UGRO_DATA_DIR"] = str(root.absolute())
    os.environ["UGRO_GPU_BACKEND"] = f"fake:{gpus}"
    settings = Settings()
    stack = Stack(settings)
    console.print(f"data dir: {settings.data_dir}")
    with console.status("starting the embedded Redis, GPU workers and beat..."):
        found = stack.up()
    console.print(f"up: {found}")
    try:
        with Client(settings) as client:
            jobs = [client.submit(spec) for spec in sweep(sys.executable)]
            console.print(f"submitted {len(jobs)} jobs")
            ids = [job.id for job in jobs]
            with Live(_table(jobs, False), console=console, refresh_per_second=4) as live:
                while True:
                    jobs = client.get_many(ids)
                    live.update(_table(jobs, False))
                    if all(job.done for job in jobs):
                        break
                    time.sleep(0.5)
            Console().print(_table(jobs, True))
    finally:
        with console.status("stopping the stack..."):
            stack.down()
    failed = [job for job in jobs if not job.succeeded]
    for job in failed:
        console.print(f"[red]{job.name} {job.status.value}: {job.error}[/]")
    console.print(f"results tree: {settings.jobs_dir}")
    return 1 if failed else 0
