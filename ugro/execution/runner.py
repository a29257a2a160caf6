"""Run one job's command as a child process group and classify how it ended.

The child gets its own session (and so its own process group) and carries the
job's tag in its environment. Stopping a job (cancel, timeout, lost lease, worker
shutdown) sends SIGTERM to the group and to every tagged process outside it (so
each process gets one), then SIGKILL to whatever is left after the grace period;
whatever outlives the main process is killed when it exits, so no stray process
keeps a GPU.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from ugro.execution.processes import (
    JobTag,
    job_processes,
    oom_kill_count,
    outside_group,
    send,
    settle,
)
from ugro.jobs.disk import failed_for_room, free_space, no_room_error, no_room_line
from ugro.jobs.lifecycle import ExitReason

#: How the log tail shows a CUDA (or host) out-of-memory failure.
_OOM_PATTERN = re.compile(
    rb"CUDA out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED|"
    rb"cudaErrorMemoryAllocation|RESOURCE_EXHAUSTED: Out of memory|MemoryError",
)
#: A line that reads as an error: a Python exception line (``ValueError: ...``,
#: ``torch.OutOfMemoryError``, ``KeyboardInterrupt``), or a word programs and shells
#: print when they fail.
_ERROR_LINE = re.compile(
    r"^(\w+\.)*\w*(Error|Exception|Interrupt)\b"
    r"|\b(ERROR|Error|FATAL|Fatal|Exception|Killed|Segmentation fault|Aborted|"
    r"[Oo]ut of memory|OOM)\b"
    r"|\b[Ee]rror:"
    # the per-GPU launcher's line on the rank that failed first
    r"|^rank \d+ \(GPU \d+\) exited with code",
)
_TAIL_BYTES = 64 * 1024
# How often the runner looks at its job: a cancel or a shutdown is noticed this fast.
_POLL = 0.25


@dataclass(frozen=True)
class ExitInfo:
    """How a run ended.

    ``reason``: one of ``ExitReason`` (``ugro.jobs.lifecycle``, where each is
    described). ``deterministic`` marks a failure that would repeat (the command
    could not start): never retried.
    """

    reason: ExitReason
    started: float
    ended: float
    code: int | None = None
    signal: int | None = None
    pid: int | None = None
    error: str | None = None
    deterministic: bool = False

    @property
    def duration(self) -> float:
        return self.ended - self.started


@dataclass(frozen=True)
class RunControl:
    """What the runner checks while the job runs.

    ``heartbeat`` is called every ``interval`` seconds and returns False when the
    job's leases were lost (the job is then stopped with ``lost_grace``, when given,
    instead of ``grace``: it must be gone before the job may run elsewhere).
    ``cancelled`` returns the grace and the reason (``cancelled`` by a person,
    ``stuck`` by the progress scan) of a request to stop the job, or None. ``stop``
    set means the worker is shutting down.
    """

    heartbeat: Callable[[], bool]
    interval: float
    stop: threading.Event
    timeout: float | None
    grace: float
    cancelled: Callable[[], tuple[float, str] | None] = lambda: None
    on_start: Callable[[int], None] = lambda pid: None
    lost_grace: float | None = None


@dataclass
class _Stopping:
    reason: ExitReason
    kill_at: float
    procs: list[psutil.Process] = field(default_factory=list)


def run_command(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: Path,
    log_path: Path,
    control: RunControl,
) -> ExitInfo:
    """Run ``argv`` to its end with output appended to ``log_path``."""
    tag = JobTag(env.get("UGRO_JOB_ID", ""), env.get("UGRO_NODE"))
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
            error = start_failure(argv[0], cwd, exc)
            out.write(f"ugro: {error}\n".encode())  # the log says why it is empty
            return ExitInfo(
                ExitReason.ERROR, started, time.time(), 127, error=error, deterministic=True
            )
    # Read once the job is on its way: a new process takes far longer than this to
    # allocate enough memory for the kernel to kill it.
    ooms_before = oom_kill_count()
    try:
        control.on_start(proc.pid)
    except BaseException:
        # The job's start could not be recorded: it must not run unrecorded.
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
        _finish_off(proc.pid, tag, None)
        raise
    stopping = _watch(proc, tag, control)
    _finish_off(proc.pid, tag, stopping)
    job_dir = Path(env["UGRO_JOB_DIR"]) if "UGRO_JOB_DIR" in env else log_path.parent
    return _classify(proc, started, stopping, log_path, ooms_before, job_dir)


def start_failure(program: str, cwd: Path, exc: OSError) -> str:
    """Why a command could not start, naming what is wrong: the working directory
    (gone since the job was submitted) or the program."""
    if not cwd.is_dir():
        return f"working directory {cwd} does not exist (it was removed after submit?)"
    if isinstance(exc, FileNotFoundError) and "/" not in program:
        return f"cannot start {program!r}: no such program on the job's PATH"
    return f"cannot start {program!r} in {cwd}: {exc.strerror or exc}"


class _ExitWaiter:
    """Waits for a process to exit, waking the moment it does.

    ``Popen.wait(timeout=...)`` polls with sleeps that double up to 50 ms, so a job
    that runs 60 ms is seen ended at about 110 ms. A pidfd (Linux 5.3+) becomes
    readable when the process exits: the wait ends at once. Elsewhere, the polling
    wait is the fallback.
    """

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.poller: select.poll | None = None
        self.fd: int | None = None
        try:
            self.fd = os.pidfd_open(proc.pid)
            self.poller = select.poll()
            self.poller.register(self.fd, select.POLLIN)
        except (AttributeError, OSError):
            self.close()

    def wait(self, timeout: float) -> bool:
        """True when the process has exited (and is reaped) within ``timeout`` s."""
        if self.poller is not None:
            if not self.poller.poll(timeout * 1000):
                return False
            self.proc.wait()
            return True
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
        self.fd, self.poller = None, None


def _watch(proc: subprocess.Popen[bytes], tag: JobTag, control: RunControl) -> _Stopping | None:
    """Wait for the main process, starting the stop sequence when asked to."""
    waiter = _ExitWaiter(proc)
    try:
        return _watch_until_exit(proc, waiter, tag, control)
    finally:
        waiter.close()


def _watch_until_exit(
    proc: subprocess.Popen[bytes], waiter: _ExitWaiter, tag: JobTag, control: RunControl
) -> _Stopping | None:
    now = time.monotonic()
    deadline = None if control.timeout is None else now + control.timeout
    next_beat = now + control.interval
    stopping: _Stopping | None = None
    while True:
        if waiter.wait(_POLL):
            return stopping
        now = time.monotonic()
        if stopping is not None:
            if now >= stopping.kill_at:
                _kill_all(proc.pid, tag, stopping)
            continue
        reason: ExitReason | None = None
        grace = control.grace
        if control.stop.is_set():
            reason = ExitReason.INTERRUPTED
        elif (asked := control.cancelled()) is not None:
            grace, reason = asked[0], stop_reason(asked[1])
        elif deadline is not None and now >= deadline:
            reason = ExitReason.TIMEOUT
        elif now >= next_beat:
            next_beat = now + control.interval
            if not control.heartbeat():
                reason = ExitReason.LOST
                grace = control.grace if control.lost_grace is None else control.lost_grace
        if reason is not None:
            stopping = _Stopping(reason, now + grace, job_processes(proc.pid, tag))
            _signal_group(proc.pid, signal.SIGTERM)
            send(outside_group(stopping.procs, proc.pid), signal.SIGTERM)


def stop_reason(asked: str) -> ExitReason:
    """The reason a request to stop the job names: ``cancelled`` (a person),
    ``stuck`` (the progress scan) or ``idle`` (the health sweep); anything else is
    taken for a person's cancel, since the job stops either way."""
    try:
        return ExitReason(asked)
    except ValueError:
        return ExitReason.CANCELLED


def _finish_off(pgid: int, tag: JobTag, stopping: _Stopping | None) -> None:
    """Once the main process is gone, what is left of the job dies too.

    A job that ended by itself: its process group gets SIGKILL at once (cheap, no
    scan; a tagged process outside the group is the node agent's orphan scan's).
    A job ugro was stopping: every process of it gets the rest of the grace.
    """
    if stopping is None:
        _signal_group(pgid, signal.SIGKILL)
        settle([], pgid, timeout=1.0)
        return
    left = job_processes(pgid, tag)
    _, left = psutil.wait_procs(left, timeout=max(0.0, stopping.kill_at - time.monotonic()))
    send(left, signal.SIGKILL)
    _signal_group(pgid, signal.SIGKILL)
    settle(left + stopping.procs, pgid, timeout=5.0)


def _kill_all(pgid: int, tag: JobTag, stopping: _Stopping) -> None:
    _signal_group(pgid, signal.SIGKILL)
    stopping.procs = job_processes(pgid, tag) + stopping.procs
    send(stopping.procs, signal.SIGKILL)
    stopping.kill_at = float("inf")


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _classify(
    proc: subprocess.Popen[bytes],
    started: float,
    stopping: _Stopping | None,
    log_path: Path,
    ooms_before: int | None,
    job_dir: Path,
) -> ExitInfo:
    ended = time.time()
    code = proc.returncode
    sig = -code if code < 0 else None
    exit_code = code if code >= 0 else None
    if stopping is not None:
        return ExitInfo(
            stopping.reason,
            started,
            ended,
            exit_code,
            sig,
            proc.pid,
            error=f"stopped by ugro: {stopping.reason}",
        )
    if code == 0:
        return ExitInfo(ExitReason.OK, started, ended, 0, None, proc.pid)
    ooms_after = oom_kill_count()
    kernel_oom = sig == signal.SIGKILL and (ooms_after or 0) > (ooms_before or 0)
    tail = _tail(log_path)
    if kernel_oom or _OOM_PATTERN.search(tail) is not None:
        return ExitInfo(
            ExitReason.OOM, started, ended, exit_code, sig, proc.pid, error="out of memory"
        )
    # (after the OOM check: a job out of memory is that, whatever room is left)
    space = free_space(log_path.parent)
    if failed_for_room(tail, space):
        error = no_room_line(tail) or no_room_error(job_dir, space)
        return ExitInfo(ExitReason.DISK_FULL, started, ended, exit_code, sig, proc.pid, error=error)
    if sig is not None:
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        error = f"killed by {name}"
        return ExitInfo(ExitReason.KILLED, started, ended, None, sig, proc.pid, error=error)
    error = last_error_line(log_path) or f"exit code {code}"
    return ExitInfo(ExitReason.ERROR, started, ended, code, None, proc.pid, error=error)


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
    """The last line of the log's tail that looks like an error (a traceback's
    exception line, an ``Error``/``Exception``/``Killed``/out-of-memory line), for
    reports; None when no line does: a job's last words are often its progress
    (``epoch 3/5 loss=0.4``), which is no reason for a failure."""
    lines = _tail(log_path).decode("utf-8", "replace").splitlines()
    for line in reversed(lines):
        line = line.strip()
        if line and _ERROR_LINE.search(line) and not line.startswith("Traceback (most recent"):
            return line[:500]
    return None
