"""The Celery queues ugro's processes consume, by name.

One queue per GPU worker (``<prefix>.gpu.<node>.<index>``), one per node agent
(``<prefix>.node.<node>``) and one for beat's control tasks (``<prefix>.control``),
all under the installation's prefix so that installations sharing a Redis server
never read each other's messages.
"""

from __future__ import annotations

from ugro.settings import Settings


def queue_for_gpu(settings: Settings, node: str, index: int) -> str:
    """The Celery queue of one GPU's worker: ``ugro.gpu.<node>.<index>``."""
    return f"{settings.redis_prefix}.gpu.{node}.{index}"


def control_queue(settings: Settings) -> str:
    """The queue of beat's control tasks (dispatch tick), served by node agents."""
    return f"{settings.redis_prefix}.control"


def node_queue(settings: Settings, node: str) -> str:
    return f"{settings.redis_prefix}.node.{node}"
