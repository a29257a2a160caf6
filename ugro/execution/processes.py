"""Process control: how ugro finds and stops a job's processes.

A job's processes are its process group plus every process carrying its tag
(``UGRO_JOB_ID`` and ``UGRO_NODE`` in the environment), so a grandchild that
double-forked and called ``setsid`` is still found.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import psutil

_PR_SET_CHILD_SUBREAPER = 36


def alive(pid: int) -> bool:
    """Whether ``pid`` runs and is not a zombie."""
    try:
        return _running(psutil.Process(pid))
    except psutil.Error:
        return False


def become_subreaper() -> bool:
    """Make orphaned descendants of this process its children (Linux), so that a
    job's double-forked processes are reaped here and never left as zombies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


class JobTag(NamedTuple):
    """What a job's processes carry in their environment: its id (``UGRO_JOB_ID``)
    and the node they run on (``UGRO_NODE``). A gang job's members share the id;
    each stops only its own node's processes (however many nodes one kernel runs,
    as a test bed's namespaces do)."""

    job_id: str
    node: str | None = None  # None: any node's


def job_processes(pgid: int | None, tag: JobTag) -> list[psutil.Process]:
    """The live processes of a job on one node: its group ``pgid`` and every
    process carrying its ``tag``."""
    job_id, node = tag
    found = []
    for proc in psutil.process_iter(["environ"]):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            in_group = pgid is not None and os.getpgid(proc.pid) == pgid
            environ = proc.info["environ"] or {}
            tagged = environ.get("UGRO_JOB_ID") == job_id and node in (
                None,
                environ.get("UGRO_NODE"),
            )
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
        if (in_group or tagged) and proc.pid != os.getpid():
            found.append(proc)
    return found


def outside_group(procs: Iterable[psutil.Process], pgid: int) -> list[psutil.Process]:
    """Those of ``procs`` not in the process group ``pgid``: a signal sent to the
    group reaches the others already, and a job that handles SIGTERM (to save a
    checkpoint, say) must see it once."""
    found = []
    for proc in procs:
        try:
            if os.getpgid(proc.pid) != pgid:
                found.append(proc)
        except (ProcessLookupError, PermissionError):
            continue
    return found


def tagged_jobs() -> dict[str, list[psutil.Process]]:
    """Every live process on this machine that carries a job tag, by job id."""
    found: dict[str, list[psutil.Process]] = {}
    for proc in psutil.process_iter(["environ"]):
        try:
            job_id = (proc.info["environ"] or {}).get("UGRO_JOB_ID")
            if job_id and proc.status() != psutil.STATUS_ZOMBIE:
                found.setdefault(job_id, []).append(proc)
        except psutil.Error:
            continue
    return found


def terminate(procs: list[psutil.Process], grace: float) -> None:
    """SIGTERM to ``procs``, SIGKILL to those left after ``grace`` seconds, then
    wait for them to end (whoever is their parent reaps them)."""
    send(procs, signal.SIGTERM)
    _, left = psutil.wait_procs(procs, timeout=grace)
    send(left, signal.SIGKILL)
    psutil.wait_procs(left, timeout=5)


def send(procs: Iterable[psutil.Process], sig: int) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)


def reap_children() -> None:
    """Collect every exited child of this process (orphans of jobs that this
    subreaper adopted). Call only when no job's main process is still unwaited."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def group_exists(pgid: int) -> bool:
    """Whether any process (a zombie included) is left in the group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def settle(procs: Iterable[psutil.Process], pgid: int | None, timeout: float) -> None:
    """Wait for killed processes to end, reaping those that are (or became, as a
    subreaper) our children, so that none is left as a zombie."""
    me = os.getpid()
    procs = list(procs)
    deadline = time.monotonic() + timeout
    while True:
        reap_children()
        waiting = []
        for proc in procs:
            try:
                if proc.status() != psutil.STATUS_ZOMBIE or proc.ppid() == me:
                    waiting.append(proc)
            except psutil.Error:
                continue
        procs = waiting
        if (not procs and not (pgid and group_exists(pgid))) or time.monotonic() >= deadline:
            return
        time.sleep(0.01)


def stop_supervisor(pid: int, grace: float) -> None:
    """SIGTERM a supervisor (it stops its services), wait up to ``grace``, then
    SIGKILL its whole process group."""
    try:
        proc = psutil.Process(pid)
        proc.send_signal(signal.SIGTERM)
    except psutil.Error:
        return
    # Not psutil's wait: it counts a zombie as running, and the supervisor's parent
    # is init, which may take seconds to reap it (1.6 s seen here) after it stopped.
    deadline = time.monotonic() + grace
    while _running(proc):
        if time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            return
        time.sleep(0.02)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@functools.cache
def _oom_counters() -> tuple[Path, ...]:
    """The files that count this process's cgroup's OOM kills (cgroup v2
    memory.events, or v1 memory.oom_control); a process keeps its cgroup, so they
    are looked up once."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return ()
    candidates = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            candidates.append(Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.events")
        elif "memory" in controllers.split(","):
            candidates.append(
                Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.oom_control"
            )
    return tuple(candidates)


def oom_kill_count() -> int | None:
    """How many processes the kernel's OOM killer has killed in this cgroup, when
    the kernel says."""
    for candidate in _oom_counters():
        try:
            for entry in candidate.read_text().splitlines():
                key, _, value = entry.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
    return None
