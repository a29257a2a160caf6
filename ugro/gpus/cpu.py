"""No GPU: one slot per CPU core, so jobs still run one per slot."""

from __future__ import annotations

import os

from ugro.gpus.base import GpuInfo


class CpuBackend:
    kind = "cpu"

    def __init__(self) -> None:
        self.slots = os.cpu_count() or 1

    def devices(self) -> list[GpuInfo]:
        return [
            GpuInfo(index=i, name="cpu-slot", uuid=f"cpu-{i}", memory_total_mb=0.0)
            for i in range(self.slots)
        ]

    def describe(self) -> str:
        return f"no GPU found: running jobs on {self.slots} CPU slots (one per core)"
