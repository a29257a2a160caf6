"""Process-group control: how ugro stops a job and everything it started."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import psutil


def alive(pid: int) -> bool:
    """Whether ``pid`` runs and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def group_alive(pgid: int) -> bool:
    """Whether any process of the group ``pgid`` is still there."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to a process group; False when the group is gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def stop_group(pgid: int, grace: float) -> None:
    """SIGTERM the group, wait up to ``grace`` seconds, then SIGKILL what is left."""
    if not signal_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return
        time.sleep(0.05)
    signal_group(pgid, signal.SIGKILL)


def stop_pids(pids: list[int], grace: float) -> None:
    """SIGTERM each process's group, wait up to ``grace``, then SIGKILL the rest."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    for proc in procs:
        _signal_tree(proc, signal.SIGTERM)
    _, remaining = psutil.wait_procs(procs, timeout=grace)
    for proc in remaining:
        _signal_tree(proc, signal.SIGKILL)
    psutil.wait_procs(remaining, timeout=5)


def _signal_tree(proc: psutil.Process, sig: int) -> None:
    try:
        os.killpg(os.getpgid(proc.pid), sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)
