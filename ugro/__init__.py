"""ugro: GPU job orchestration for machine-learning labs, on Celery + Redis.

``log_metrics`` is imported eagerly (a training script needs nothing else); the
client and the spec load on first use, so ``import ugro`` stays cheap in a job.

``ugro.app`` (also ``ugro.celery``) is the Celery app of the environment's settings,
made on first use, so that Celery's own commands find it: ``celery -A ugro status``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ugro.tracking import log_metrics

if TYPE_CHECKING:
    from ugro.client import Client
    from ugro.errors import SpecError, UgroError
    from ugro.job import Job
    from ugro.jobs.lifecycle import JobStatus
    from ugro.jobs.spec import JobSpec
    from ugro.settings import Settings

__all__ = [
    "Client",
    "Job",
    "JobSpec",
    "JobStatus",
    "Settings",
    "SpecError",
    "UgroError",
    "log_metrics",
]

_LAZY = {
    "Client": "ugro.client",
    "Job": "ugro.job",
    "JobSpec": "ugro.jobs.spec",
    "JobStatus": "ugro.jobs.lifecycle",
    "Settings": "ugro.settings",
    "SpecError": "ugro.errors",
    "UgroError": "ugro.errors",
}


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):  # what `celery -A ugro` looks for, in that order
        from ugro.transport.celery_app import environment_app

        return environment_app()
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ugro' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
