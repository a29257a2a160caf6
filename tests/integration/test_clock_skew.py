"""A node whose clock is two minutes off, either way, on one host: node a runs the
stack (Redis, beat, its GPU worker) on the true time, node b's worker runs under
libfaketime (Debian's ``faketime``, installed by ``make system``). Leases and
liveness are judged by Redis's clock, so node b keeps its job for as long as it
runs and loses it, once killed, as soon as an unskewed node would."""

from __future__ import annotations

import contextlib
import glob
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.conftest import (
    BIN,
    env_for,
    make_settings,
    processes_of,
    running_stack,
    wait_for_job,
    wait_until,
)
from ugro import Client, JobSpec, JobStatus
from ugro.settings import Settings

# The multi-threaded build: a GPU worker reads the clock from several threads.
LIBFAKETIME = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
SKEW = 120.0
TIMINGS = {
    "lease_ttl": 8.0,
    "heartbeat_interval": 1.0,
    "reconcile_interval": 2.0,
    "worker_ttl": 6.0,
}
# Attempt 1 runs until its node dies; attempt 2, should it come, ends at once.
LONG_THEN_SHORT = 'if [ "$UGRO_ATTEMPT" = 1 ]; then exec sleep 300; fi; exit 0'


def _skewed_env(settings: Settings, skew: float) -> dict[str, str]:
    if not LIBFAKETIME:
        pytest.fail("libfaketime is missing: `make system` installs Debian's faketime")
    env = env_for(settings)
    env["LD_PRELOAD"] = LIBFAKETIME[0]
    env["FAKETIME"] = f"{skew:+.0f}s"
    # Only the wall clock is off on such a host: the monotonic one, which timed
    # waits (the presence thread's, the heartbeat's) use, runs true.
    env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
    return env


def _clock_of(env: dict[str, str]) -> float:
    """time.time() in a Python started with ``env``."""
    out = subprocess.run(
        [sys.executable, "-c", "import time; print(time.time())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout)


def _kill_tree(proc: subprocess.Popen[bytes], data_dir: Path) -> None:
    """The node dies whole: its worker, GPU workers, agent and job, SIGKILLed. Its
    processes are found by their environment (``FAKETIME``, which only node b's
    have, and this test's data dir), not by parentage, which a process forked or
    reparented meanwhile would escape; looked for again until none is left."""

    def node_b() -> list[psutil.Process]:
        found = []
        for each in psutil.process_iter(["environ"]):
            with contextlib.suppress(psutil.Error):
                environ = each.info["environ"] or {}
                if "FAKETIME" in environ and environ.get("UGRO_DATA_DIR") == str(data_dir):
                    found.append(each)
        return found

    deadline = time.monotonic() + 20
    while (left := node_b()) and time.monotonic() < deadline:
        for each in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                each.kill()
        psutil.wait_procs(left, timeout=2)
    assert not node_b(), "node b's processes outlived SIGKILL"
    proc.wait(10)


def _holds_for(seconds: float, check: Callable[[], None], what: str) -> None:
    """``check`` passes at every look for ``seconds``."""
    end = time.monotonic() + seconds

    def held() -> bool:
        check()
        return time.monotonic() >= end

    wait_until(held, seconds + 30, what)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("skew", [-SKEW, SKEW], ids=["behind", "ahead"])
def test_a_node_whose_clock_is_off_keeps_its_lease_and_loses_it_on_time(
    tmp_path: Path, database_url: str, skew: float
) -> None:
    node_a = make_settings(
        tmp_path / "data", database_url, node_name="a", gpu_backend="fake:1", **TIMINGS
    )
    node_b = node_a.model_copy(update={"node_name": "b"})
    env_b = _skewed_env(node_b, skew)
    # Given node b's clock two minutes off, as its processes see it,
    assert abs(_clock_of(env_b) - time.time() - skew) < 5
    with running_stack(node_a), Client(node_a) as client:
        worker_b = subprocess.Popen(
            [str(BIN / "ugro"), "worker"],
            env=env_b,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:

            def alive() -> set[str]:
                return {w.node for w in client.rt.live.workers(node_a.worker_ttl)}

            wait_until(lambda: alive() == {"a", "b"}, 90, "both nodes' workers")
            job = client.submit(
                JobSpec(
                    name="skewed", node="b", max_retries=1, command=["sh", "-c", LONG_THEN_SHORT]
                )
            )
            wait_for_job(client, job.id, lambda j: j.status is JobStatus.RUNNING, 60)

            # when it runs there for a lease TTL and a half, its lease held all along and
            # its worker alive,
            def still_held() -> None:
                now = client.get(job.id)
                assert now.status is JobStatus.RUNNING and now.attempt == 1, now
                assert client.rt.live.leases.holds_lease(job.id, "b", [0])
                assert "b" in alive()

            _holds_for(1.5 * node_a.lease_ttl, still_held, "the job held on node b")

            # and when node b dies whole, its job goes back to the queue (it may
            # run on node b only) once its lease runs out and a reconcile tick
            # sees it: neither two minutes early nor late.
            killed = time.monotonic()  # (from the first SIGKILL: the sweep takes a moment)
            _kill_tree(worker_b, node_a.data_dir)
            seen: dict[str, float] = {}

            def requeued_and_gone() -> bool:
                if "requeued" not in seen and client.get(job.id).status is JobStatus.QUEUED:
                    seen["requeued"] = time.monotonic() - killed
                if "gone" not in seen and "b" not in alive():
                    seen["gone"] = time.monotonic() - killed
                return len(seen) == 2

            wait_until(requeued_and_gone, 60, f"the job requeued, node b gone: {seen}")
            lost_after, gone_after = seen["requeued"], seen["gone"]
        finally:
            if worker_b.poll() is None:
                _kill_tree(worker_b, node_a.data_dir)
        print(f"skew {skew:+.0f} s: requeued {lost_after:.1f} s, worker gone {gone_after:.1f} s")
        bound = node_a.lease_ttl + node_a.reconcile_interval + 3.0
        # (its last renewal came at most a heartbeat before the kill)
        assert node_a.lease_ttl - node_a.heartbeat_interval - 1.0 <= lost_after <= bound
        assert gone_after <= node_a.worker_ttl + 3.0
        after = client.get(job.id)
        assert after.status is JobStatus.QUEUED and after.attempt == 1, after
    assert processes_of(node_b) == []
