"""The workloads. Each takes an adapter and returns plain figures for one repeat."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

# `true` that also says when it started: bash's $EPOCHREALTIME needs no extra process.
_STAMP = 'printf %s "$EPOCHREALTIME" > "$0"'
OUTPUT_BYTES = 20_000_000


def settle_disk() -> None:
    """Write back what earlier workloads left dirty before measuring the next one:
    the writeback of W3's gigabytes or W4's ten thousand directories otherwise
    stalls whoever creates files next, and ugro creates more per job than the
    others."""
    os.sync()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def w1_latency(adapter: Any, jobs: int, workdir: Path) -> dict[str, float]:
    """One job at a time: submit -> process start, submit -> seen finished (ms)."""
    settle_disk()
    starts, ends = [], []
    for i in range(jobs):
        marker = workdir / f"{adapter.name}-w1-{i}.start"
        sent = time.time()
        handle = adapter.submit(["bash", "-c", _STAMP, str(marker)])
        [seen] = adapter.wait([handle])
        starts.append((float(marker.read_text()) - sent) * 1000)
        ends.append((seen - sent) * 1000)
    figures = {}
    for name, values in (("start", starts), ("finish", ends)):
        for q in (50, 90, 99):
            figures[f"{name}_p{q}_ms"] = percentile(values, q)
    return figures


def w2_throughput(adapter: Any, jobs: int, batch: bool = False) -> dict[str, float]:
    """Jobs of `true` submitted back to back (``batch``: in one call, each system's
    way of sending many at once); the submit phase and the whole."""
    settle_disk()
    began = time.time()
    if batch:
        handles = adapter.submit_many([["true"] for _ in range(jobs)])
    else:
        handles = [adapter.submit(["true"]) for _ in range(jobs)]
    submitted = time.time() - began
    adapter.wait(handles)
    wall = time.time() - began
    return {"wall_s": wall, "jobs_per_s": jobs / wall, "submit_s": submitted}


def w3_output(adapter: Any, jobs: int) -> dict[str, float]:
    """Jobs writing ~20 MB each to stdout, captured to files.

    Each adapter starts with no dirty pages left by the one before, and its output
    files are deleted afterwards: otherwise the kernel's writeback of the earlier
    runs' gigabytes throttles whoever writes next.
    """
    settle_disk()
    began = time.time()
    handles = [adapter.submit(["head", "-c", str(OUTPUT_BYTES), "/dev/zero"]) for _ in range(jobs)]
    adapter.wait(handles)
    wall = time.time() - began
    adapter.discard(handles)
    return {"wall_s": wall}


def build_tree(root: Path, runs: int, active: int) -> list[Path]:
    """``runs`` run directories: finished trainers (3 epochs, the expected files) and
    evaluators, and ``active`` trainers that are still writing epochs."""
    files = ("training_losses.pt", "optimizer_buffer.json", "validation_scores.json")
    dirs = []
    for i in range(runs):
        run = root / f"run{i:05d}"
        if i % 2 and i >= active:
            run.mkdir(parents=True)
            (run / "evaluation_scores.json").write_text('{"accuracy": 0.8}')
        else:
            epochs = 1 if i < active else 3
            for epoch in range(epochs):
                epoch_dir = run / f"epoch_{epoch}"
                epoch_dir.mkdir(parents=True)
                for name in files:
                    (epoch_dir / name).write_text('{"accuracy": 0.5}')
        dirs.append(run)
    return dirs


def w4_scan(root: Path, runs: int, active: int) -> dict[str, float]:
    """The progress scan over ``runs`` directories: cold, warm with nothing new, and
    warm after each active run wrote one more epoch."""
    from ugro.progress.scan import Scanner

    dirs = build_tree(root, runs, active)
    settle_disk()
    scanner = Scanner(stuck_after=3600, outdated_after=30 * 86400)
    began = time.perf_counter()
    scanner.scan(dirs, epochs=3)
    cold = time.perf_counter() - began
    began = time.perf_counter()
    scanner.scan(dirs, epochs=3)
    warm = time.perf_counter() - began
    for run in dirs[:active]:
        (run / "epoch_1").mkdir()
        for name in ("training_losses.pt", "optimizer_buffer.json", "validation_scores.json"):
            (run / "epoch_1" / name).write_text('{"accuracy": 0.6}')
    began = time.perf_counter()
    scanner.scan(dirs, epochs=3)
    changed = time.perf_counter() - began
    return {
        "cold_s": cold,
        "warm_s": warm,
        "warm_50_changed_s": changed,
        "reread_dirs": float(scanner.read_count),
    }


def summarise(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}
