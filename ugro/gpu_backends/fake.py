"""Simulated GPUs for machines without one (the demo and the tests).

Another program's use of a simulated GPU is simulated too: the file
``<data_dir>/fake-gpus.json`` (when present) maps a GPU index to what else runs
there, e.g. ``{"2": {"processes": [4242], "memory_used_mb": 9000}}``. A listed
process counts while it is alive.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ugro.gpus import GpuInfo

CONTROL_FILE = "fake-gpus.json"


class FakeBackend:
    kind = "fake"

    def __init__(self, count: int, data_dir: Path | None = None) -> None:
        self.count = count
        self.control = None if data_dir is None else data_dir / CONTROL_FILE

    def _overrides(self) -> dict[str, Any]:
        if self.control is None:
            return {}
        try:
            return dict(json.loads(self.control.read_text()))
        except (OSError, ValueError):
            return {}

    def devices(self) -> list[GpuInfo]:
        overrides = self._overrides()
        found = []
        for i in range(self.count):
            extra = overrides.get(str(i), {})
            found.append(
                GpuInfo(
                    index=i,
                    name="Fake GPU 24GB",
                    uuid=f"GPU-fake-{i:04d}",
                    memory_total_mb=24576.0,
                    memory_used_mb=float(extra.get("memory_used_mb", 0.0)),
                    utilization=float(extra.get("utilization", 0.0)),
                    temperature_c=35.0,
                    power_w=30.0,
                    processes=tuple(int(pid) for pid in extra.get("processes", [])),
                )
            )
        return found

    def describe(self) -> str:
        return f"{self.count} simulated GPUs (UGRO_GPU_BACKEND=fake:{self.count})"
