"""The node supervisor: runs this node's services as children and keeps them up.

It is the parent (and, as a child subreaper, the adopter) of everything ugro
starts on the node, so every process that exits is reaped here: a job's orphaned
grandchild never lingers as a zombie. A service that dies unexpectedly (a GPU
worker killed by SIGKILL, say) is started again after a pause, unless it keeps
dying; first, what the service names for its death is run (``Service.on_death``).
SIGTERM or SIGINT is passed on to every service, and the supervisor exits once
they have all stopped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from ugro.execution.processes import become_subreaper

log = logging.getLogger(__name__)

# A service that dies this many times within the window is left down.
_MAX_RESTARTS = 5
_RESTART_WINDOW = 60.0
_RESTART_PAUSE = 1.0


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    # Run when the service dies unexpectedly, before it is started again: a GPU
    # worker's declares the attempt it ran lost at once (``workers.gpu_lost``).
    on_death: list[str] | None = None


@dataclass
class _Running:
    service: Service
    pid: int
    deaths: deque[float] = field(default_factory=lambda: deque(maxlen=_MAX_RESTARTS))


class Supervisor:
    def __init__(
        self, services: list[Service], env: dict[str, str], log_dir: Path | None = None
    ) -> None:
        self.services = services
        self.env = env
        self.log_dir = log_dir
        self.stopping = False
        self.running: dict[int, _Running] = {}
        self.exit_code = 0

    def _spawn(self, service: Service) -> int:
        if self.log_dir is None:
            proc = subprocess.Popen(service.argv, env=self.env)
        else:
            with (self.log_dir / f"{service.name}.log").open("ab") as out:
                proc = subprocess.Popen(
                    service.argv,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
        proc.returncode = 0  # reaped by os.wait below, never by Popen
        return proc.pid

    def _forward(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True
        for pid in list(self.running):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def run(self) -> int:
        """Run until every service has stopped; the first non-zero exit status."""
        become_subreaper()
        signal.signal(signal.SIGTERM, self._forward)
        signal.signal(signal.SIGINT, self._forward)
        for service in self.services:
            pid = self._spawn(service)
            self.running[pid] = _Running(service, pid)
        while self.running:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            entry = self.running.pop(pid, None)
            if entry is None:
                continue  # an adopted orphan of some job: reaped, nothing more
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                self.exit_code = self.exit_code or max(code, 0)
                continue
            if entry.service.on_death is not None:
                # (its own child: reaped by the wait above like an adopted orphan)
                self._spawn(Service(f"{entry.service.name}-died", entry.service.on_death))
            self._restart(entry, code)
        return self.exit_code

    def _restart(self, entry: _Running, code: int) -> None:
        now = time.monotonic()
        entry.deaths.append(now)
        name = entry.service.name
        if len(entry.deaths) == _MAX_RESTARTS and now - entry.deaths[0] < _RESTART_WINDOW:
            log.error("%s died %d times in a minute; leaving it down", name, _MAX_RESTARTS)
            self.exit_code = 1
            return
        log.warning("%s exited (%s); starting it again", name, code)
        time.sleep(_RESTART_PAUSE)
        if self.stopping:
            return
        pid = self._spawn(entry.service)
        self.running[pid] = _Running(entry.service, pid, entry.deaths)
