"""The floor of any Celery-based design: one task that runs a command.

Worker: concurrency 2, prefetch 1, on the same Redis server as ugro (its own db).
"""

from __future__ import annotations

import os
import subprocess

from celery import Celery

broker = os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/1")
app = Celery("bench_raw", broker=broker, backend=broker)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    worker_prefetch_multiplier=1,
    task_default_queue="bench.raw",
    worker_hijack_root_logger=False,
)


@app.task(name="bench.run")
def run(argv: list[str], out: str) -> int:
    with open(out, "wb") as handle:
        return subprocess.run(argv, stdout=handle, stderr=subprocess.STDOUT, check=False).returncode
