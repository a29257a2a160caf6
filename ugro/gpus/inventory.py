"""GPU inventory: what GPUs this node has, read through a backend.

``UGRO_GPU_BACKEND``: ``nvml`` (real GPUs through pynvml), ``fake:N`` (N simulated
GPUs, for machines without one), ``cpu`` (one slot per core, no GPU) or ``auto``
(NVML when it finds a GPU, else CPU slots). Indices follow ``nvidia-smi``
(PCI bus order), which is why every job gets ``CUDA_DEVICE_ORDER=PCI_BUS_ID``.
"""

from __future__ import annotations

from pathlib import Path

from ugro.errors import InventoryError
from ugro.gpus.base import GpuBackend
from ugro.gpus.cpu import CpuBackend
from ugro.gpus.fake import FakeBackend
from ugro.gpus.nvml import NvmlBackend


def load_backend(
    spec: str, data_dir: Path | None = None, node: str = "", jobs_dir: Path | None = None
) -> GpuBackend:
    """The backend named by ``UGRO_GPU_BACKEND`` (``jobs_dir``: where this
    installation's jobs run, for simulated GPUs to see only those)."""
    spec = spec.strip().lower()
    if spec.startswith("fake"):
        _, _, count = spec.partition(":")
        try:
            n = int(count or "1")
        except ValueError:
            raise InventoryError(f"UGRO_GPU_BACKEND={spec!r}: write fake:N, N a number") from None
        if not 1 <= n <= 64:
            raise InventoryError(f"UGRO_GPU_BACKEND={spec!r}: N must be 1 to 64")
        return FakeBackend(n, data_dir, node, jobs_dir)
    if spec == "cpu":
        return CpuBackend()
    if spec == "nvml":
        return NvmlBackend.open()
    if spec == "auto":
        try:
            return NvmlBackend.open()
        except InventoryError:
            return CpuBackend()
    raise InventoryError(
        f"UGRO_GPU_BACKEND={spec!r} is not a backend: use auto, nvml, fake:N or cpu"
    )
