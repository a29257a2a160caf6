"""What must hold at every moment of a fault test, sampled while the test acts,
and the processes of ugro's jobs, found by the tags every job process carries
(``UGRO_JOB_ID``, ``UGRO_ATTEMPT``, ``UGRO_NODE``, ``CUDA_VISIBLE_DEVICES``,
``UGRO_JOB_DIR``). Only the jobs of one data dir are looked at: other tests' jobs
may run on this machine at the same time, on nodes of the same names.

Shared by the fault tests (tests/integration/test_faults.py) and the soak
(bench/soak.py).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis

from ugro import Client


def job_processes(jobs_dir: Path) -> dict[int, dict[str, str]]:
    """The environment of every live process of a job under ``jobs_dir``, wherever
    it runs (the bed's namespaces share this machine's processes), by pid."""
    inside = f"{jobs_dir}{os.sep}"
    found = {}
    for proc in psutil.process_iter(["environ", "status"]):
        with contextlib.suppress(psutil.Error):
            environ = proc.info["environ"] or {}
            if (
                "UGRO_JOB_ID" in environ
                and environ.get("UGRO_JOB_DIR", "").startswith(inside)
                and proc.info["status"] != psutil.STATUS_ZOMBIE
            ):
                found[proc.pid] = environ
    return found


def processes_of(jobs_dir: Path, job_id: str) -> list[dict[str, str]]:
    """The environments of the live processes of one job."""
    return [env for env in job_processes(jobs_dir).values() if env["UGRO_JOB_ID"] == job_id]


@dataclass
class SharedGpu:
    """A GPU on which processes of two jobs or more were seen at once."""

    at: float  # seconds since sampling began
    node: str
    gpu: str
    jobs: list[str]


@dataclass
class Sampler:
    """Samples every ``interval`` s, while a test acts, what must hold at every
    moment: no job runs two attempts at once, no GPU runs processes of two jobs at
    once, and no more GPU leases are held than there are GPUs.

    The GPUs in use are read from the jobs' processes, not from the leases: one
    lease key per GPU holds one job by construction, and a process that outlives
    its lease is the fault to catch. A Redis that does not answer (restarting)
    skips the lease count of that sample."""

    client: Client
    gpus: int
    interval: float = 0.2
    samples: int = 0
    most_attempts_at_once: int = 0
    most_leases: int = 0
    #: Jobs seen running two attempts at once: job id -> the attempts.
    attempts_at_once: dict[str, list[str]] = field(default_factory=dict)
    shared_gpus: list[SharedGpu] = field(default_factory=list)
    _done: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self._began = time.monotonic()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _sample(self) -> None:
        leases = redis.Redis.from_url(
            self.client.rt.settings.effective_redis_url, socket_timeout=1.0
        )
        pattern = f"{self.client.rt.keys.prefix}:lease:*"
        try:
            while not self._done.wait(self.interval):
                self._sample_processes()
                with contextlib.suppress(redis.RedisError):
                    held = sum(1 for _ in leases.scan_iter(match=pattern, count=1000))
                    self.most_leases = max(self.most_leases, held)
                self.samples += 1
        finally:
            leases.close()

    def _sample_processes(self) -> None:
        attempts: dict[str, set[str]] = {}
        on_gpu: dict[tuple[str, str], set[str]] = {}
        for environ in job_processes(self.client.rt.settings.jobs_dir).values():
            job = environ["UGRO_JOB_ID"]
            attempts.setdefault(job, set()).add(environ.get("UGRO_ATTEMPT", "?"))
            node = environ.get("UGRO_NODE", "?")
            for gpu in environ.get("CUDA_VISIBLE_DEVICES", "").split(","):
                on_gpu.setdefault((node, gpu), set()).add(job)
        for job, seen in attempts.items():
            self.most_attempts_at_once = max(self.most_attempts_at_once, len(seen))
            if len(seen) > 1:
                self.attempts_at_once[job] = sorted(seen)
        at = round(time.monotonic() - self._began, 1)
        for (node, gpu), jobs in on_gpu.items():
            if len(jobs) > 1:
                self.shared_gpus.append(SharedGpu(at, node, gpu, sorted(jobs)))
