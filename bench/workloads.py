"""The workloads. Each takes an adapter and returns plain figures for one repeat."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

# `true` that also says when it started: bash's $EPOCHREALTIME needs no extra process.
_STAMP = 'printf %s "$EPOCHREALTIME" > "$0"'
OUTPUT_BYTES = 20_000_000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def w1_latency(adapter: Any, jobs: int, workdir: Path) -> dict[str, float]:
    """One job at a time: submit -> process start, submit -> seen finished (ms)."""
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


def w2_throughput(adapter: Any, jobs: int) -> dict[str, float]:
    """Jobs of `true` submitted back to back; the submit phase and the whole."""
    began = time.time()
    handles = [adapter.submit(["true"]) for _ in range(jobs)]
    submitted = time.time() - began
    adapter.wait(handles)
    wall = time.time() - began
    return {"wall_s": wall, "jobs_per_s": jobs / wall, "submit_s": submitted}


def w3_output(adapter: Any, jobs: int) -> dict[str, float]:
    """Jobs writing ~20 MB each to stdout, captured to files."""
    began = time.time()
    handles = [adapter.submit(["head", "-c", str(OUTPUT_BYTES), "/dev/zero"]) for _ in range(jobs)]
    adapter.wait(handles)
    return {"wall_s": time.time() - began}


def summarise(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}
