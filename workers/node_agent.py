"""The node agent: ``python -m workers.node_agent``.

Serves ``ugro.node.<node>`` (this node's own control work) and ``ugro.control``
(beat's cluster-wide ticks, such as the dispatch safety net).
"""

from __future__ import annotations

from ugro.celery_app import make_app
from ugro.runtime import control_queue, node_queue
from ugro.settings import Settings


def main() -> None:
    settings = Settings()
    app = make_app(settings)
    node = settings.node_name
    app.worker_main(
        [
            "worker",
            "--queues",
            f"{node_queue(settings, node)},{control_queue(settings)}",
            "--concurrency",
            "1",
            "--pool",
            "threads",
            "--hostname",
            f"agent@{node}",
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "INFO",
        ]
    )


if __name__ == "__main__":
    main()
