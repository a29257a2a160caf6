"""Runtime: the settings, the registry and the live state of one process, together.

Every status change goes through ``Runtime.transition``, which checks it against
the lifecycle table in the registry (compare-and-set) and then mirrors it in Redis.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ugro.keys import Keys
from ugro.live import LiveState
from ugro.paths import JobPaths
from ugro.registry import Registry
from ugro.settings import Settings
from ugro.status import JobStatus


def queue_for_gpu(settings: Settings, node: str, index: int) -> str:
    """The Celery queue of one GPU's worker: ``ugro.gpu.<node>.<index>``."""
    return f"{settings.redis_prefix}.gpu.{node}.{index}"


def control_queue(settings: Settings) -> str:
    """The queue of beat's control tasks (dispatch tick), served by node agents."""
    return f"{settings.redis_prefix}.control"


def node_queue(settings: Settings, node: str) -> str:
    return f"{settings.redis_prefix}.node.{node}"


@dataclass
class Runtime:
    settings: Settings
    live: LiveState
    registry: Registry
    _app: Any = field(default=None, repr=False)

    @classmethod
    def open(cls, settings: Settings, ride_out: bool = False) -> Runtime:
        """With ``ride_out`` (worker processes), Redis commands wait out a restart."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        live = LiveState.open(settings, ride_out=ride_out)
        return cls(settings, live, Registry(settings.effective_database_url))

    @property
    def keys(self) -> Keys:
        return self.live.keys

    @property
    def app(self) -> Any:
        """The Celery app, made on first use (a client that only reads needs none)."""
        if self._app is None:
            from ugro.celery_app import make_app

            self._app = make_app(self.settings)
        return self._app

    def paths(self, job_id: str) -> JobPaths:
        return JobPaths(self.settings.jobs_dir, job_id)

    def send_job(self, job_id: str, token: str, node: str, gpus: list[int]) -> None:
        """Send a placed job to the queue of its first GPU's worker."""
        self.app.send_task(
            "ugro.run_job",
            kwargs={"job_id": job_id, "token": token, "node": node, "gpus": gpus},
            # What Flower and the logs show: the lease token stays out of sight.
            kwargsrepr=repr({"job_id": job_id, "node": node, "gpus": gpus}),
            queue=queue_for_gpu(self.settings, node, gpus[0]),
        )

    def transition(
        self,
        job_id: str,
        new: JobStatus,
        expect: Iterable[JobStatus] | None = None,
        **values: Any,
    ) -> bool:
        """Change a job's status in the registry (compare-and-set), then in Redis."""
        if not self.registry.transition(job_id, new, expect=expect, **values):
            return False
        live: dict[str, Any] = {"status": new.value}
        for key in ("node", "exit_code", "exit_reason"):
            if key in values:
                live[key] = values[key]
        if "gpu_indices" in values:
            live["gpus_held"] = values["gpu_indices"] or ""
        self.live.set_job(job_id, **live)
        return True

    def close(self) -> None:
        self.registry.close()
        self.live.redis.close()


def gpu_json(gpus: Iterable[int]) -> str:
    return json.dumps(list(gpus))
