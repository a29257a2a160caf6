"""The local stack: the processes `ugro up` starts in the background and
`ugro down` stops, and `ugro worker` runs in the foreground.

Each process has a pid file and a log file under ``<data_dir>/run/``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from ugro.errors import StackError
from ugro.gpus import load_backend
from ugro.live import LiveState
from ugro.processes import alive, stop_pids
from ugro.redis_server import EmbeddedRedis
from ugro.registry import Registry
from ugro.settings import Settings


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]


def node_services(gpus: list[int]) -> list[Service]:
    """This node's GPU workers and its node agent."""
    python = sys.executable
    services = [Service(f"gpu-{i}", [python, "-m", "workers.gpu", "--index", str(i)]) for i in gpus]
    services.append(Service("agent", [python, "-m", "workers.node_agent"]))
    return services


def beat_service() -> Service:
    return Service("beat", [sys.executable, "-m", "workers.beat"])


def select_gpus(settings: Settings, wanted: list[int] | None) -> tuple[list[int], str]:
    """The GPU indices to serve (all, or ``wanted``) and what the backend found."""
    backend = load_backend(settings.gpu_backend)
    present = [device.index for device in backend.devices()]
    if wanted is None:
        return present, backend.describe()
    unknown = sorted(set(wanted) - set(present))
    if unknown:
        raise StackError(f"GPUs {unknown} do not exist here; this node has {present}")
    return sorted(set(wanted)), backend.describe()


def _child_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    # Pin what the children must agree on, even if the caller's env changes later.
    env["UGRO_DATA_DIR"] = str(settings.data_dir)
    env["UGRO_NODE_NAME"] = settings.node_name
    env["UGRO_GPU_BACKEND"] = settings.gpu_backend
    return env


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.run_dir = settings.run_dir
        self.redis = EmbeddedRedis(settings)

    def _pidfile(self, name: str) -> os.PathLike[str]:
        return self.run_dir / f"{name}.pid"

    def running(self) -> dict[str, int]:
        """The stack's processes that are alive, by name."""
        found = {}
        for pidfile in sorted(self.run_dir.glob("*.pid")):
            try:
                pid = int(pidfile.read_text().strip())
            except (OSError, ValueError):
                continue
            if alive(pid):
                found[pidfile.stem] = pid
        return found

    def up(
        self,
        gpus: list[int] | None = None,
        with_beat: bool = True,
        timeout: float = 90.0,
        on_progress: Callable[[str, int, int], None] | None = None,
    ) -> str:
        """Start Redis (when embedded), the GPU workers, the node agent and beat in
        the background; return once every GPU worker serves its queue."""
        indices, found = select_gpus(self.settings, gpus)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.settings.embedded_redis:
            self.redis.start()
        Registry(self.settings.effective_database_url).close()  # tables, before the workers race
        services = node_services(indices) + ([beat_service()] if with_beat else [])
        running = self.running()
        env = _child_env(self.settings)
        for service in services:
            if service.name in running:
                continue
            with (self.run_dir / f"{service.name}.log").open("ab") as log:
                proc = subprocess.Popen(
                    service.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=env,
                    cwd=self.settings.data_dir,
                )
            (self.run_dir / f"{service.name}.pid").write_text(f"{proc.pid}\n")
        self._await_workers(indices, timeout, on_progress)
        return found

    def _await_workers(
        self,
        indices: list[int],
        timeout: float,
        on_progress: Callable[[str, int, int], None] | None,
    ) -> None:
        live = LiveState.open(self.settings)
        node = self.settings.node_name
        deadline = time.monotonic() + timeout
        try:
            while True:
                ready = {w.index for w in live.workers(self.settings.worker_ttl) if w.node == node}
                done = len(ready & set(indices))
                if on_progress is not None:
                    on_progress("GPU workers ready", done, len(indices))
                if done == len(indices):
                    return
                dead = [name for name in self._expected(indices) if name not in self.running()]
                if dead:
                    raise StackError(
                        f"{', '.join(dead)} exited at start; see {self.run_dir}/{dead[0]}.log,"
                        " then `ugro down`"
                    )
                if time.monotonic() > deadline:
                    raise StackError(
                        f"GPU workers not ready after {timeout:.0f} s; see the logs in"
                        f" {self.run_dir}, then `ugro down`"
                    )
                time.sleep(0.2)
        finally:
            live.redis.close()

    def _expected(self, indices: list[int]) -> list[str]:
        return [f"gpu-{i}" for i in indices]

    def down(self, grace: float | None = None) -> list[str]:
        """Stop every process `up` started, then the embedded Redis; returns their names.

        Workers get SIGTERM first: each puts its running job back in the queue
        (after the job's own stop sequence) before it exits.
        """
        running = self.running()
        wait = (self.settings.stop_grace if grace is None else grace) + 15.0
        stop_pids(list(running.values()), grace=wait)
        for name in running:
            (self.run_dir / f"{name}.pid").unlink(missing_ok=True)
        stopped = list(running)
        if self.settings.embedded_redis and self.redis.stop():
            stopped.append("redis")
        return stopped


def run_foreground(settings: Settings, services: list[Service]) -> int:
    """Run services as children with their output on this terminal until they end.

    SIGTERM or SIGINT is passed on to every child; this returns when all are gone,
    with the first non-zero exit status among them.
    """
    env = _child_env(settings)
    procs = [subprocess.Popen(service.argv, env=env) for service in services]

    def forward(signum: int, _frame: FrameType | None) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [proc.wait() for proc in procs]
    return next((code for code in codes if code), 0)
