"""Benchmarks: ugro against raw Celery and the process floor, in one run."""
