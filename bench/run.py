"""`make bench` (`python -m bench.run`): every workload against floor, raw Celery
and ugro in one invocation, each repeated, with ugro's figures as ratios.

Writes the JSON lines it measured to bench/results/ and prints one table.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench.adapters import CeleryAdapter, FloorAdapter, UgroAdapter, workdir
from bench.workloads import (
    settle_disk,
    summarise,
    w1_latency,
    w2_throughput,
    w3_output,
    w4_scan,
)

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = {
    "full": {"w1": 200, "w2": 1000, "w3": 20, "w4": 10_000, "repeats": 3},
    "quick": {"w1": 30, "w2": 100, "w3": 4, "w4": 1_000, "repeats": 3},
}
#: W6 (bench.control_plane): nodes x GPUs each, the queue lengths, rounds at each
#: length and beat ticks; run once, on SQLite and on PostgreSQL when one answers.
W6_SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "nodes": 100,
        "gpus_per_node": 8,
        "levels": [10_000, 50_000],
        "samples": 50,
        "ticks": 3,
    },
    "quick": {"nodes": 10, "gpus_per_node": 8, "levels": [1_000], "samples": 10, "ticks": 1},
}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    memory = psutil.virtual_memory().total / 2**30
    return (
        f"{psutil.cpu_count()} cores ({cpu}), {memory:.0f} GiB, Python {platform.python_version()}"
    )


def run(size: str) -> list[dict[str, Any]]:
    n = SIZES[size]
    root = workdir()
    ugro = UgroAdapter(2, root)
    ugro.start()
    broker = f"redis+socket://{ugro.redis_socket}?virtual_host=1"
    adapters = [FloorAdapter(2, root), CeleryAdapter(broker, root), ugro]
    for adapter in adapters[:2]:
        adapter.start()
    rows: list[dict[str, Any]] = []
    try:
        for repeat in range(n["repeats"]):
            # Rotate the order so that drift of the machine hits every adapter alike.
            order = adapters[repeat % 3 :] + adapters[: repeat % 3]
            for workload, call in (
                ("W1 latency", lambda a: w1_latency(a, n["w1"], root)),
                ("W2 throughput", lambda a: w2_throughput(a, n["w2"])),
                ("W2 batch", lambda a: w2_throughput(a, n["w2"], batch=True)),
                ("W3 output", lambda a: w3_output(a, n["w3"])),
            ):
                for adapter in order:
                    figures = call(adapter)
                    rows.append(
                        {"workload": workload, "adapter": adapter.name, "repeat": repeat, **figures}
                    )
                    print(
                        f"  {workload:<14} {adapter.name:<7} repeat {repeat}: "
                        + ", ".join(f"{k}={v:.2f}" for k, v in figures.items()),
                        flush=True,
                    )
            rows.append(
                {
                    "workload": "W5 idle memory",
                    "adapter": "ugro",
                    "repeat": repeat,
                    **ugro.worker_memory(),
                }
            )
            # Each repeat's tree is kept until the run's end (with ``root``): deleting
            # its ~75,000 inodes slows every inode created after it, for minutes, on
            # an ext4 without a journal (this machine's): its allocator passes over
            # each inode freed in the last minute (six, while the inode's table block
            # is not written back), one buffer lookup each. ugro creates a dozen
            # inodes per job and raw Celery one: ugro's W2 after such a deletion
            # took 2.5 times the kernel time, raw Celery's no more.
            scan = w4_scan(root / f"w4-{repeat}", n["w4"], active=50)
            rows.append({"workload": "W4 scan", "adapter": "ugro", "repeat": repeat, **scan})
    finally:
        for adapter in adapters:
            adapter.stop()
        shutil.rmtree(root, ignore_errors=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    figures: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        for key, value in row.items():
            if key not in ("workload", "adapter", "repeat"):
                figures[(row["workload"], key)][row["adapter"]].append(value)
    lines = [
        "| workload | metric | floor | celery | ugro | ugro/celery | ugro/floor |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (workload, metric), by_adapter in figures.items():
        cells, medians = [], {}
        for name in ("floor", "celery", "ugro"):
            if name in by_adapter:
                s = summarise(by_adapter[name])
                medians[name] = s["median"]
                cells.append(f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})")
            else:
                cells.append("-")
        ratios = [
            f"{medians['ugro'] / medians[base]:.2f}x" if medians.get(base) else "-"
            for base in ("celery", "floor")
        ]
        lines.append(f"| {workload} | {metric} | " + " | ".join(cells + ratios) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small run, under a minute")
    args = parser.parse_args()
    size = "quick" if args.quick else "full"
    started = datetime.now(UTC)
    print(f"ugro bench ({size}) on {machine()}", flush=True)
    began = time.time()
    rows = run(size)
    # (imported here: bench.control_plane imports this module)
    from bench import control_plane
    from bench.simulated_cluster import Shape

    w6 = W6_SIZES[size]
    shape = Shape(w6["nodes"], w6["gpus_per_node"])
    registries = list(control_plane.REGISTRIES)
    settle_disk()
    control = control_plane.run(shape, w6["levels"], registries, w6["samples"], w6["ticks"])
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{started:%Y%m%dT%H%M%SZ}-{size}.jsonl"
    with out.open("w") as handle:
        for row in [*rows, {"workload": "W6 control plane", "adapter": "ugro", **control}]:
            handle.write(json.dumps({"started": started.isoformat(), "size": size, **row}) + "\n")
    print()
    print(table(rows))
    print()
    print(control_plane.render(control))
    print(f"\n{len(rows) + 1} measurements in {time.time() - began:.0f} s; JSON lines: {out}")


if __name__ == "__main__":
    main()
