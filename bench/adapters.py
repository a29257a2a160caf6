"""Three ways of running a command, behind one interface: start, submit, wait, stop.

- ``FloorAdapter``: ``subprocess.Popen`` directly, output to a file, N slots.
- ``CeleryAdapter``: a minimal Celery app (``bench.raw_celery``) on the same Redis.
- ``UgroAdapter``: the real ugro through its public client, embedded defaults.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import psutil


class Adapter(Protocol):
    name: str

    def start(self) -> None: ...

    def submit(self, argv: list[str]) -> Any:
        """Queue one command; returns a handle for ``wait``."""
        ...

    def submit_many(self, argvs: list[list[str]]) -> list[Any]:
        """Queue several commands at once, the way the system offers for it."""
        ...

    def wait(self, handles: list[Any]) -> list[float]:
        """Block until every job has ended; the time each was seen finished."""
        ...

    def discard(self, handles: list[Any]) -> None:
        """Delete what these jobs wrote (their output files)."""
        ...

    def stop(self) -> None: ...


class FloorAdapter:
    """The limit any orchestrator on this machine can approach."""

    name = "floor"

    def __init__(self, slots: int, workdir: Path) -> None:
        self.slots = slots
        self.workdir = workdir
        self.jobs: queue.Queue[tuple[list[str], Path, threading.Event, list[float]] | None] = (
            queue.Queue()
        )
        self.threads = [threading.Thread(target=self._slot, daemon=True) for _ in range(slots)]
        self.count = 0
        self.outputs: dict[int, Path] = {}

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _slot(self) -> None:
        while (job := self.jobs.get()) is not None:
            argv, out, done, seen = job
            with out.open("wb") as handle:
                subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT).wait()
            seen.append(time.time())
            done.set()

    def submit(self, argv: list[str]) -> Any:
        self.count += 1
        done, seen = threading.Event(), []
        out = self.workdir / f"floor-{self.count}.out"
        self.jobs.put((argv, out, done, seen))
        self.outputs[id(done)] = out
        return done, seen

    def discard(self, handles: list[Any]) -> None:
        for done, _ in handles:
            self.outputs.pop(id(done)).unlink(missing_ok=True)

    def submit_many(self, argvs: list[list[str]]) -> list[Any]:
        return [self.submit(argv) for argv in argvs]

    def wait(self, handles: list[Any]) -> list[float]:
        for done, _ in handles:
            done.wait()
        return [seen[0] for _, seen in handles]

    def stop(self) -> None:
        for _ in self.threads:
            self.jobs.put(None)


class CeleryAdapter:
    """Raw Celery + Redis: one task that runs the command with subprocess.run."""

    name = "celery"

    def __init__(self, broker: str, workdir: Path) -> None:
        self.broker = broker
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.count = 0
        self.outputs: dict[str, Path] = {}

    def start(self) -> None:
        env = dict(os.environ, BENCH_CELERY_BROKER=self.broker)
        self.log = (self.workdir / "celery-worker.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "bench.raw_celery", "worker",
             "--concurrency", "2", "--prefetch-multiplier", "1", "--queues", "bench.raw",
             "--hostname", "bench-raw@%h", "--without-gossip", "--without-mingle",
             "--loglevel", "WARNING"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        os.environ["BENCH_CELERY_BROKER"] = self.broker
        from bench.raw_celery import app, run

        self.app, self.task = app, run
        # Ready when a round trip succeeds.
        self.task.apply_async(args=[["true"], str(self.workdir / "warmup.out")]).get(timeout=60)

    def submit(self, argv: list[str]) -> Any:
        self.count += 1
        out = self.workdir / f"celery-{self.count}.out"
        result = self.task.apply_async(args=[argv, str(out)])
        self.outputs[result.id] = out
        return result

    def discard(self, handles: list[Any]) -> None:
        for result in handles:
            self.outputs.pop(result.id).unlink(missing_ok=True)

    def submit_many(self, argvs: list[list[str]]) -> list[Any]:
        # A loop: a group (one call) sends each task the same way, only slower.
        return [self.submit(argv) for argv in argvs]

    def wait(self, handles: list[Any]) -> list[float]:
        seen = []
        for result in handles:
            result.get(timeout=600)
            seen.append(time.time())
        return seen

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.log.close()


class UgroAdapter:
    """ugro itself: `ugro up` on embedded defaults with N fake GPUs, then the client."""

    name = "ugro"

    def __init__(self, slots: int, workdir: Path) -> None:
        self.data_dir = workdir / "ugro-data"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("UGRO_")}
        self.env.update(UGRO_DATA_DIR=str(self.data_dir), UGRO_GPU_BACKEND=f"fake:{slots}")
        self.bin = Path(sys.executable).parent / "ugro"
        self.count = 0

    def start(self) -> None:
        subprocess.run(
            [str(self.bin), "up"],
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        from ugro import Client, JobSpec, Settings

        self.spec = JobSpec
        self.client = Client(
            Settings(data_dir=self.data_dir, gpu_backend=self.env["UGRO_GPU_BACKEND"])
        )
        # Ready when a job has gone through, as raw Celery is after its round trip.
        warmup = [self.submit(["true"])]
        self.wait(warmup)
        self.discard(warmup)

    @property
    def redis_socket(self) -> str:
        return str(self.client.settings.redis_socket)

    def submit(self, argv: list[str]) -> Any:
        self.count += 1
        return self.client.submit(self.spec(name=f"bench{self.count}", command=argv)).id

    def submit_many(self, argvs: list[list[str]]) -> list[Any]:
        specs = []
        for argv in argvs:
            self.count += 1
            specs.append(self.spec(name=f"bench{self.count}", command=argv))
        return [job.id for job in self.client.submit_many(specs)]

    def wait(self, handles: list[Any]) -> list[float]:
        seen: dict[str, float] = {}

        def note(jobs: list[Any]) -> None:
            now = time.time()
            for job in jobs:
                if job.done and job.id not in seen:
                    seen[job.id] = now

        self.client.wait(handles, on_change=note)
        return [seen[job_id] for job_id in handles]

    def discard(self, handles: list[Any]) -> None:
        for job_id in handles:
            shutil.rmtree(self.client.rt.paths(job_id).logs, ignore_errors=True)

    def worker_memory(self) -> dict[str, float]:
        """Resident and unique memory (MB) of one GPU worker and of the node agent."""
        gpu_pid = self.client.rt.live.workers(60)[0].pid
        agent = next(
            p
            for p in psutil.process_iter(["cmdline"])
            if "workers.node_agent" in " ".join(p.info["cmdline"] or [])
            and p.environ().get("UGRO_DATA_DIR") == str(self.data_dir)
        )
        found = {}
        for name, proc in (("gpu_worker", psutil.Process(gpu_pid)), ("node_agent", agent)):
            info = proc.memory_full_info()
            found[f"{name}_rss_mb"] = info.rss / 2**20
            found[f"{name}_uss_mb"] = info.uss / 2**20
        return found

    def stop(self) -> None:
        """``ugro down``, the client closed first if ``start`` got that far."""
        if hasattr(self, "client"):
            try:
                self.client.close()
            except Exception as exc:  # (down all the same)
                print(f"closing a client: {exc}", file=sys.stderr)
        subprocess.run(
            [str(self.bin), "down"],
            env=self.env,
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="ugro-bench-"))
