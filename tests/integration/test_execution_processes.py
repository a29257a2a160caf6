"""Stopping a supervisor: done when it has stopped, not when its parent reaps it."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from ugro.execution.processes import stop_supervisor

# A parent that starts a child in its own session and never waits for it, as init
# may not for seconds: the child, once stopped, stays a zombie meanwhile.
_NEGLECTFUL_PARENT = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen(['sleep', '60'], start_new_session=True)\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(60)\n"
)


@pytest.mark.timeout(60)
def test_a_stopped_supervisor_left_a_zombie_counts_as_stopped() -> None:
    parent = subprocess.Popen([sys.executable, "-c", _NEGLECTFUL_PARENT], stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        began = time.monotonic()
        stop_supervisor(child, grace=30.0)
        waited = time.monotonic() - began
        # It ended at SIGTERM and is a zombie now; waiting out the grace would
        # have been 30 s, then a SIGKILL of its group.
        assert psutil.Process(child).status() == psutil.STATUS_ZOMBIE
        assert waited < 10, waited
    finally:
        parent.kill()
        parent.wait()
