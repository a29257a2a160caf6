"""The node agent: ``python -m workers.node_agent``.

Serves ``ugro.node.<node>`` (this node's own control work) and ``ugro.control``
(beat's cluster-wide ticks: dispatch, reconcile, health sweep), reads this node's
health every ``health_collect_interval`` and scans it for orphaned job processes
every ``orphan_scan_interval``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.signals import worker_ready, worker_shutting_down

from ugro.errors import RegistryUnreachable
from ugro.execution.orphans import kill_orphans
from ugro.execution.reconcile import reconcile
from ugro.gpus.inventory import load_backend
from ugro.health.readings import HealthCollector
from ugro.runtime import Runtime
from ugro.settings import Settings
from ugro.tasks import runtime
from ugro.transport.celery_app import make_app
from ugro.transport.queues import control_queue, node_queue
from workers.start import start_serving

log = logging.getLogger(__name__)


def main() -> None:
    settings = Settings()
    app = make_app(settings)
    node = settings.node_name
    stop = threading.Event()
    backend = load_backend(settings.gpu_backend, settings.data_dir, node, settings.jobs_dir)
    collector: HealthCollector | None = None

    def scan_orphans() -> None:
        while not stop.wait(settings.orphan_scan_interval):
            try:
                kill_orphans(runtime(), node)
            except RegistryUnreachable as exc:  # what runs is unknown: nothing is killed
                log.warning("orphan scan skipped: %s", exc)
            except Exception:  # the scan must keep going whatever one pass hit
                log.exception("orphan scan failed")

    @worker_ready.connect(weak=False)
    def _ready(**_: Any) -> None:
        def serve(rt: Runtime) -> None:
            nonlocal collector
            collector = HealthCollector(rt, backend)
            collector.start()
            threading.Thread(target=scan_orphans, name="ugro-orphans", daemon=True).start()

        start_serving("the node agent", settings, serve, reconcile)

    @worker_shutting_down.connect(weak=False)
    def _stopping(**_: Any) -> None:
        stop.set()
        if collector is not None:
            collector.stop()

    app.worker_main(
        [
            "worker",
            "--queues", f"{node_queue(settings, node)},{control_queue(settings)}",
            "--concurrency", "1",
            "--pool", "threads",
            "--hostname", f"agent@{node}",
            "--without-gossip",
            "--without-mingle",
            "--loglevel", "INFO",
        ]
    )  # fmt: skip


if __name__ == "__main__":
    main()
