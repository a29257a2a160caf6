"""A GPU worker as the live state knows it (the ``workers`` hash, one field per
GPU, written by each worker's presence thread)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class WorkerInfo:
    node: str
    index: int
    pid: int
    host: str
    seen: float
    blocked: str | None = None  # why another program keeps the GPU busy
    gpu: dict[str, Any] | None = None  # the device's last reading (GpuInfo fields)


def node_block(why: str | None) -> str | None:
    """Why a GPU of a node the health sweep marked unhealthy is blocked."""
    return None if why is None else f"node unhealthy ({why})"
