"""What a GPU is to ugro (``GpuInfo``), the backend interface that reads them
(``GpuBackend``) and when another program's use keeps ugro off one."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol


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
