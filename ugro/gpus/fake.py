"""Simulated GPUs for machines without one (the demo and the tests).

A simulated GPU looks like a real one: idle it sits at 0 % and 35 C; while a ugro
job runs on it (a process tagged with ``UGRO_JOB_ID`` whose ``UGRO_NODE`` is this
node and whose ``CUDA_VISIBLE_DEVICES`` names it) it reports that process, high
utilisation, memory in use, heat and power. Given its installation's jobs dir, it
counts only that installation's jobs (as the orphan scan does): two simulated
clusters on one machine, each with a node of the same name, are two machines.

The file ``<data_dir>/fake-gpus.json`` (when present) changes what a GPU reports,
keyed by ``"<index>"`` (every node) or ``"<node>:<index>"`` (one node), e.g.
``{"2": {"processes": [4242], "memory_used_mb": 9000}, "nodeb:0": {"fail": "lost"}}``:
``processes`` (another program's; counted while alive), ``memory_used_mb``,
``utilization``, ``temperature_c``, ``power_w`` (a hot GPU), and ``fail`` (the
device stops answering, with that message).
"""

from __future__ import annotations

import json
import time
import zlib
from pathlib import Path
from typing import Any

import psutil

from ugro.gpus.base import GpuInfo

CONTROL_FILE = "fake-gpus.json"


class FakeBackend:
    kind = "fake"

    def __init__(
        self,
        count: int,
        data_dir: Path | None = None,
        node: str = "",
        jobs_dir: Path | None = None,
    ) -> None:
        self.count = count
        self.node = node
        self.jobs_dir = None if jobs_dir is None else f"{jobs_dir}/"
        self.control = None if data_dir is None else data_dir / CONTROL_FILE

    def _overrides(self) -> dict[str, Any]:
        if self.control is None:
            return {}
        try:
            return dict(json.loads(self.control.read_text()))
        except (OSError, ValueError):
            return {}

    def _jobs_by_gpu(self) -> dict[int, tuple[int, ...]]:
        """Pids of this node's ugro job processes, by the simulated GPU they use.

        Scanned afresh at each reading (a few ms), never kept from an earlier one:
        a reading must be of its moment, as NVML's is, or a GPU whose job just
        ended reads busy after its lease is gone."""
        found: dict[int, list[int]] = {}
        for proc in psutil.process_iter():
            try:
                environ = proc.environ()
            except psutil.Error:
                continue
            if "UGRO_JOB_ID" not in environ or environ.get("UGRO_NODE", "") != self.node:
                continue
            if self.jobs_dir and not environ.get("UGRO_JOB_DIR", "").startswith(self.jobs_dir):
                continue
            for part in environ.get("CUDA_VISIBLE_DEVICES", "").split(","):
                if part.strip().isdigit():
                    found.setdefault(int(part), []).append(proc.pid)
        return {index: tuple(pids) for index, pids in found.items()}

    def devices(self) -> list[GpuInfo]:
        overrides = self._overrides()
        jobs = self._jobs_by_gpu() if self.node else {}
        found = []
        for i in range(self.count):
            extra = {**overrides.get(str(i), {}), **overrides.get(f"{self.node}:{i}", {})}
            pids = jobs.get(i, ())
            # A steady but not constant reading, as a busy GPU gives.
            wobble = zlib.crc32(f"{self.node}{i}{int(time.time() / 5)}".encode()) % 10
            busy = bool(pids)
            fail = extra.get("fail")
            found.append(
                GpuInfo(
                    index=i,
                    name="Fake GPU 24GB",
                    uuid=f"GPU-fake-{i:04d}",
                    memory_total_mb=24576.0,
                    memory_used_mb=float(
                        extra.get("memory_used_mb", 6144.0 + 100 * wobble if busy else 0.0)
                    ),
                    utilization=float(extra.get("utilization", 88.0 + wobble if busy else 0.0)),
                    temperature_c=float(extra.get("temperature_c", 68.0 if busy else 35.0)),
                    power_w=float(extra.get("power_w", 210.0 + wobble if busy else 30.0)),
                    processes=pids + tuple(int(pid) for pid in extra.get("processes", [])),
                    error=None if not fail else str(fail if isinstance(fail, str) else "lost"),
                )
            )
        return found

    def describe(self) -> str:
        return f"{self.count} simulated GPUs (UGRO_GPU_BACKEND=fake:{self.count})"
