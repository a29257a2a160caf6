"""The local stack: what `ugro up` starts in the background and `ugro down` stops,
and what `ugro worker` runs in the foreground.

The services run under one supervisor (``ugro.ops.supervisor``); each has a log file
under ``<data_dir>/run/``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ugro.errors import StackError
from ugro.execution.processes import alive, stop_supervisor
from ugro.gpus.inventory import load_backend
from ugro.live.connection import connect
from ugro.live.state import LiveState
from ugro.ops.redis_server import EmbeddedRedis
from ugro.ops.supervisor import Service, Supervisor
from ugro.registry.store import Registry
from ugro.settings import Settings


def node_services(gpus: list[int]) -> list[Service]:
    """This node's GPU workers and its node agent."""
    python = sys.executable
    services = [
        Service(
            f"gpu-{i}",
            [python, "-m", "workers.gpu", "--index", str(i)],
            on_death=[python, "-m", "workers.gpu_lost", "--index", str(i)],
        )
        for i in gpus
    ]
    services.append(Service("agent", [python, "-m", "workers.node_agent"]))
    return services


def beat_service() -> Service:
    return Service("beat", [sys.executable, "-m", "workers.beat"])


def select_gpus(settings: Settings, wanted: list[int] | None) -> tuple[list[int], str]:
    """The GPU indices to serve (all, or ``wanted``) and what the backend found."""
    backend = load_backend(
        settings.gpu_backend, settings.data_dir, settings.node_name, settings.jobs_dir
    )
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


def supervisor_argv(gpus: list[int], with_beat: bool, log_dir: Path | None) -> list[str]:
    argv = [sys.executable, "-m", "workers.supervisor", "--gpus", ",".join(map(str, gpus))]
    if with_beat:
        argv.append("--beat")
    if log_dir is not None:
        argv += ["--log-dir", str(log_dir)]
    return argv


class Stack:
    """The background stack of one node: the embedded Redis (unless a Redis URL is
    set) and the supervisor, whose pid is in ``run/supervisor.pid``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.run_dir = settings.run_dir
        self.redis = EmbeddedRedis(settings)
        self.pidfile = self.run_dir / "supervisor.pid"

    def supervisor_pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if alive(pid) else None

    def up(
        self,
        gpus: list[int] | None = None,
        with_beat: bool = True,
        timeout: float = 90.0,
        on_progress: Callable[[str, int, int], None] | None = None,
    ) -> str:
        """Start Redis (when embedded) and the supervisor with the GPU workers, the
        node agent and beat, in the background; return once every GPU worker serves
        its queue."""
        indices, found = select_gpus(self.settings, gpus)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.settings.embedded_redis:
            self.redis.start()
        # A Redis that cannot be reached, or refuses the password, is said now: the
        # workers would only retry it in the background.
        connect(self.settings).close()
        Registry(self.settings.effective_database_url).close()  # tables, before the workers race
        if self.supervisor_pid() is None:
            with (self.run_dir / "supervisor.log").open("ab") as log:
                proc = subprocess.Popen(
                    supervisor_argv(indices, with_beat, self.run_dir),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=_child_env(self.settings),
                    cwd=self.settings.data_dir,
                )
            self.pidfile.write_text(f"{proc.pid}\n")
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
                if self.supervisor_pid() is None:
                    raise StackError(
                        f"the supervisor exited at start; see {self.run_dir}/supervisor.log"
                    )
                if time.monotonic() > deadline:
                    raise StackError(
                        f"GPU workers not ready after {timeout:.0f} s; see the logs in"
                        f" {self.run_dir}, then `ugro down`"
                    )
                time.sleep(0.2)
        finally:
            live.redis.close()

    def down(self, grace: float | None = None) -> list[str]:
        """Stop the supervisor (and so every service), then the embedded Redis.

        Workers get SIGTERM first: each stops its running job (its stop sequence)
        and puts it back in the queue before it exits.
        """
        stopped = []
        pid = self.supervisor_pid()
        if pid is not None:
            wait = (self.settings.stop_grace if grace is None else grace) + 20.0
            stop_supervisor(pid, wait)
            stopped.append("supervisor")
        self.pidfile.unlink(missing_ok=True)
        if self.settings.embedded_redis and self.redis.stop():
            stopped.append("redis")
        return stopped


def run_foreground(settings: Settings, services: list[Service]) -> int:
    """Run services under a supervisor with their output on this terminal."""
    return Supervisor(services, _child_env(settings)).run()
