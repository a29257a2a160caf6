"""GPU inventory: what GPUs this node has, read through a backend.

``UGRO_GPU_BACKEND``: ``nvml`` (real GPUs through pynvml), ``fake:N`` (N simulated
GPUs, for machines without one), ``cpu`` (one slot per core, no GPU) or ``auto``
(NVML when it finds a GPU, else CPU slots). Indices follow ``nvidia-smi``
(PCI bus order), which is why every job gets ``CUDA_DEVICE_ORDER=PCI_BUS_ID``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from ugro.errors import InventoryError


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    uuid: str
    memory_total_mb: float
    memory_used_mb: float = 0.0
    utilization: float = 0.0  # percent
    temperature_c: float | None = None
    power_w: float | None = None
    # Compute processes NVML sees on the device (ugro's jobs and anyone else's).
    processes: tuple[int, ...] = ()
    # Set when the device did not answer (fell off the bus, driver error): the
    # health score turns CRITICAL and the GPU gets no job.
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class GpuBackend(Protocol):
    #: "nvml", "fake" or "cpu": what `ugro up` and `ugro nodes` say.
    kind: str

    def devices(self) -> list[GpuInfo]:
        """Every device of this node, by index."""
        ...

    def describe(self) -> str:
        """One plain sentence about what was found."""
        ...


def foreign_use(device: GpuInfo, leased: bool, memory_threshold_mb: float) -> str | None:
    """Why this GPU cannot take a job now (it failed, or another program keeps it
    busy), or None when it is free for ugro.

    A compute process that carries no ugro job tag is another program's; so is
    memory in use above the threshold while no ugro job holds the GPU.
    """
    import psutil

    if device.error:
        return f"GPU not answering: {device.error}"
    for pid in device.processes:
        try:
            environ = psutil.Process(pid).environ()
        except psutil.AccessDenied:
            environ = {}
        except psutil.Error:
            continue  # gone already
        if "UGRO_JOB_ID" not in environ:
            try:
                name = psutil.Process(pid).name()
            except psutil.Error:
                name = "?"
            return f"in use by another program (pid {pid}, {name})"
    if not leased and device.memory_used_mb > memory_threshold_mb:
        return (
            f"{device.memory_used_mb:.0f} MiB in use by other programs"
            f" (more than UGRO_FOREIGN_MEMORY_MB={memory_threshold_mb:.0f})"
        )
    return None


def load_backend(spec: str, data_dir: Path | None = None, node: str = "") -> GpuBackend:
    """The backend named by ``UGRO_GPU_BACKEND``."""
    from ugro.gpu_backends.cpu import CpuBackend
    from ugro.gpu_backends.fake import FakeBackend
    from ugro.gpu_backends.nvml import NvmlBackend

    spec = spec.strip().lower()
    if spec.startswith("fake"):
        _, _, count = spec.partition(":")
        try:
            n = int(count or "1")
        except ValueError:
            raise InventoryError(f"UGRO_GPU_BACKEND={spec!r}: write fake:N, N a number") from None
        if not 1 <= n <= 64:
            raise InventoryError(f"UGRO_GPU_BACKEND={spec!r}: N must be 1 to 64")
        return FakeBackend(n, data_dir, node)
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
