"""GPUs as ugro sees them: ``GpuInfo`` and the backend interface (``base``), the
NVML, fake and CPU-slot backends, and the choice among them (``inventory``).

Imports ``ugro.errors`` only.
"""
