"""Run one job's command as a child process group and classify how it ended.

The child gets its own session (and so its own process group); stopping a job
signals the whole group, SIGTERM first and SIGKILL after a grace period, and
whatever of the group outlives the main process is killed when it exits, so no
stray process keeps a GPU.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ugro.processes import signal_group, stop_group

#: How the log tail shows a CUDA (or host) out-of-memory failure.
_OOM_PATTERN = re.compile(
    rb"CUDA out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED|"
    rb"cudaErrorMemoryAllocation|RESOURCE_EXHAUSTED: Out of memory|MemoryError",
)
_TAIL_BYTES = 64 * 1024
_POLL = 0.25


@dataclass(frozen=True)
class ExitInfo:
    """How a run ended.

    ``reason``: ``ok``, ``error`` (non-zero exit or could not start), ``killed``
    (a signal), ``oom``, ``timeout``, ``lost`` (its lease was lost, ugro stopped it)
    or ``interrupted`` (the worker shut down, the job goes back to the queue).
    """

    reason: str
    started: float
    ended: float
    code: int | None = None
    signal: int | None = None
    pid: int | None = None
    error: str | None = None

    @property
    def duration(self) -> float:
        return self.ended - self.started


@dataclass(frozen=True)
class RunControl:
    """What the runner checks while the job runs.

    ``heartbeat`` is called every ``interval`` seconds and returns False when the
    job's leases were lost (the runner then stops the job: the worker fences
    itself). ``stop`` set means the worker is shutting down.
    """

    heartbeat: Callable[[], bool]
    interval: float
    stop: threading.Event
    timeout: float | None
    grace: float
    on_start: Callable[[int], None] = lambda pid: None


def run_command(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: Path,
    log_path: Path,
    control: RunControl,
) -> ExitInfo:
    """Run ``argv`` to its end with output appended to ``log_path``."""
    started = time.time()
    with log_path.open("ab") as out:
        try:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            error = f"cannot start {argv[0]!r}: {exc.strerror or exc}"
            return ExitInfo("error", started, time.time(), code=127, error=error)
    control.on_start(proc.pid)
    stopped_for: str | None = None
    now = time.monotonic()
    deadline = None if control.timeout is None else now + control.timeout
    next_beat = now + control.interval
    while True:
        try:
            # Short waits: a cancel or a shutdown is noticed within this long.
            proc.wait(timeout=_POLL)
            break
        except subprocess.TimeoutExpired:
            pass
        if stopped_for is not None:
            continue
        now = time.monotonic()
        if control.stop.is_set():
            stopped_for = "interrupted"
        elif deadline is not None and now >= deadline:
            stopped_for = "timeout"
        elif now >= next_beat:
            next_beat = now + control.interval
            if not control.heartbeat():
                stopped_for = "lost"
        if stopped_for is not None:
            _stop_in_background(proc.pid, control.grace)
    # Whatever the job left behind in its group dies with it.
    signal_group(proc.pid, signal.SIGKILL)
    return _classify(proc, started, stopped_for, log_path)


def _stop_in_background(pgid: int, grace: float) -> None:
    threading.Thread(target=stop_group, args=(pgid, grace), daemon=True).start()


def _classify(
    proc: subprocess.Popen[bytes], started: float, stopped_for: str | None, log_path: Path
) -> ExitInfo:
    ended = time.time()
    code = proc.returncode
    sig = -code if code < 0 else None
    exit_code = code if code >= 0 else None
    if stopped_for is not None:
        return ExitInfo(
            stopped_for,
            started,
            ended,
            exit_code,
            sig,
            proc.pid,
            error=f"stopped by ugro: {stopped_for}",
        )
    if code == 0:
        return ExitInfo("ok", started, ended, 0, None, proc.pid)
    if _log_shows_oom(log_path):
        return ExitInfo("oom", started, ended, exit_code, sig, proc.pid, error="out of memory")
    if sig is not None:
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return ExitInfo("killed", started, ended, None, sig, proc.pid, error=f"killed by {name}")
    return ExitInfo(
        "error",
        started,
        ended,
        code,
        None,
        proc.pid,
        error=last_error_line(log_path) or f"exit code {code}",
    )


def _tail(log_path: Path) -> bytes:
    try:
        with log_path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - _TAIL_BYTES))
            return handle.read()
    except OSError:
        return b""


def _log_shows_oom(log_path: Path) -> bool:
    return _OOM_PATTERN.search(_tail(log_path)) is not None


def last_error_line(log_path: Path) -> str | None:
    """The last line of the log that looks like an error (for reports), else the last."""
    lines = [ln.strip() for ln in _tail(log_path).decode("utf-8", "replace").splitlines()]
    lines = [ln for ln in lines if ln]
    for line in reversed(lines):
        if re.search(r"(Error|Exception|error:|FATAL|Traceback)", line):
            return line[:500]
    return lines[-1][:500] if lines else None
