"""Real NVIDIA GPUs through NVML (the nvidia-ml-py package's pynvml)."""

from __future__ import annotations

from typing import Any

from ugro.errors import InventoryError
from ugro.gpus.base import GpuInfo


class NvmlBackend:
    kind = "nvml"

    def __init__(self, nvml: Any, count: int) -> None:
        self._nvml = nvml
        self.count = count

    @classmethod
    def open(cls) -> NvmlBackend:
        """Initialise NVML; InventoryError when there is no driver or no GPU."""
        try:
            import pynvml

            pynvml.nvmlInit()
            count = int(pynvml.nvmlDeviceGetCount())
        except Exception as exc:  # pynvml raises NVMLError subclasses and OSError
            raise InventoryError(f"NVML is not available: {exc}") from None
        if count == 0:
            raise InventoryError("NVML found no GPU")
        return cls(pynvml, count)

    def devices(self) -> list[GpuInfo]:
        nvml = self._nvml
        found = []
        for index in range(self.count):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                util = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except nvml.NVMLError:
                util = 0.0
            try:
                temp: float | None = float(
                    nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
                )
            except nvml.NVMLError:
                temp = None
            try:
                power: float | None = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
            except nvml.NVMLError:
                power = None
            try:
                running = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
                processes = tuple(int(p.pid) for p in running)
            except nvml.NVMLError:
                processes = ()
            name = nvml.nvmlDeviceGetName(handle)
            uuid = nvml.nvmlDeviceGetUUID(handle)
            found.append(
                GpuInfo(
                    index=index,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    uuid=uuid.decode() if isinstance(uuid, bytes) else str(uuid),
                    memory_total_mb=memory.total / 2**20,
                    memory_used_mb=memory.used / 2**20,
                    utilization=util,
                    temperature_c=temp,
                    power_w=power,
                    processes=processes,
                )
            )
        return found

    def describe(self) -> str:
        return f"{self.count} NVIDIA GPU(s) found through NVML"
