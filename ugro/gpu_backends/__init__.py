"""Implementations of ``ugro.gpus.GpuBackend``."""
