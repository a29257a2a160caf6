"""Simulated GPUs for machines without one (the demo and the tests)."""

from __future__ import annotations

from ugro.gpus import GpuInfo


class FakeBackend:
    kind = "fake"

    def __init__(self, count: int) -> None:
        self.count = count

    def devices(self) -> list[GpuInfo]:
        return [
            GpuInfo(
                index=i,
                name="Fake GPU 24GB",
                uuid=f"GPU-fake-{i:04d}",
                memory_total_mb=24576.0,
                memory_used_mb=0.0,
                utilization=0.0,
                temperature_c=35.0,
                power_w=30.0,
            )
            for i in range(self.count)
        ]

    def describe(self) -> str:
        return f"{self.count} simulated GPUs (UGRO_GPU_BACKEND=fake:{self.count})"
