"""One GPU's worker: ``python -m workers.gpu --index N``.

Consumes only ``ugro.gpu.<node>.<N>``, one job at a time, nothing prefetched. The
threads pool (of one) runs the job beside the worker's own loop, so the worker
keeps answering Flower and remote control while a job runs for days.
"""

from __future__ import annotations

import argparse
from typing import Any

from celery.signals import worker_ready, worker_shutdown, worker_shutting_down

from ugro.execution.processes import become_subreaper
from ugro.execution.reconcile import reconcile
from ugro.gpus.inventory import load_backend
from ugro.live.presence import Presence
from ugro.runtime import Runtime
from ugro.scheduling.dispatch import dispatch_pending
from ugro.settings import Settings
from ugro.transport.celery_app import make_app
from ugro.transport.queues import queue_for_gpu
from ugro.transport.receipt_ack import AckOnReceipt
from workers.start import start_serving


def worker_argv(settings: Settings, index: int) -> list[str]:
    node = settings.node_name
    return [
        "worker",
        "--queues",
        queue_for_gpu(settings, node, index),
        "--concurrency",
        "1",
        "--pool",
        "threads",
        "--hostname",
        f"gpu{index}@{node}",
        "--without-gossip",
        "--without-mingle",
        "--loglevel",
        "INFO",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", type=int, required=True, help="the GPU index (nvidia-smi)")
    args = parser.parse_args(argv)
    settings = Settings()
    app = make_app(settings)
    # Job messages leave Redis as they are received (ugro/transport/receipt_ack.py).
    app.steps["consumer"].add(AckOnReceipt)
    # Orphans of this worker's jobs become its children, so it reaps them.
    become_subreaper()
    presence: list[Presence] = []

    @worker_ready.connect(weak=False)
    def _ready(**_: Any) -> None:
        def serve(rt: Runtime) -> None:
            backend = load_backend(
                settings.gpu_backend, settings.data_dir, settings.node_name, settings.jobs_dir
            )
            presence.append(
                Presence(
                    rt.live,
                    settings.node_name,
                    args.index,
                    settings.worker_ttl,
                    backend,
                    settings.foreign_memory_mb,
                    on_unblocked=lambda: dispatch_pending(rt),
                )
            )
            presence[0].start()

        def catch_up(rt: Runtime) -> None:
            reconcile(rt)
            dispatch_pending(rt)  # jobs may have waited for this GPU to come up

        start_serving(f"GPU worker {args.index}", settings, serve, catch_up)

    # Withdraw from dispatch as soon as shutdown begins, so no job is placed on a
    # GPU whose worker is on its way out.
    @worker_shutting_down.connect(weak=False)
    @worker_shutdown.connect(weak=False)
    def _gone(**_: Any) -> None:
        for item in presence:
            item.stop()

    app.worker_main(worker_argv(settings, args.index))


if __name__ == "__main__":
    main()
