"""Faults a lab meets, on the multi-host bed (tests/hosts.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import make_settings, wait_for_job, wait_until
from tests.hosts import multi_host_bed
from ugro import Client, JobSpec
from ugro.jobs.lifecycle import JobStatus
from ugro.settings import Settings

# Attempt 1 runs until its host dies; attempt 2 ends at once.
LONG_THEN_SHORT = 'if [ "$UGRO_ATTEMPT" = 1 ]; then exec sleep 300; fi; exit 0'


def _kill_host_whole(netns: str) -> None:
    """Every process of the host, SIGKILL, then its namespace gone."""
    pids = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout
    for pid in pids.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "delete", netns], check=False)


def _watched_for(client: Client) -> float:
    """How long reconcile passes have watched the leases without a gap (as
    ``Leases.watched_for`` records it), read without counting as a pass."""
    redis = client.rt.live.redis
    seconds, micros = redis.time()
    since = redis.hget(client.rt.keys.reconciled, "since")
    return 0.0 if since is None else seconds + micros / 1e6 - float(since)


@pytest.mark.timeout(180)
def test_a_node_that_dies_whole_has_its_job_requeued_within_a_lease_ttl_and_a_tick(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(
        tmp_path / "data",
        database_url,
        lease_ttl=8.0,
        heartbeat_interval=1.0,
        reconcile_interval=2.0,
        worker_ttl=6.0,
    )
    with (
        multi_host_bed(settings, hosts=2, gpus=1, beat=True) as bed,
        Client(bed.settings) as client,
    ):
        every_gpu = {(host.node, 0) for host in bed.hosts}
        wait_until(
            lambda: {(w.node, w.index) for w in client.rt.live.workers(6.0)} == every_gpu,
            90,
            "both hosts' workers",
        )
        job = client.submit(
            JobSpec(name="victim", max_retries=1, shell=True, command=[LONG_THEN_SHORT])
        )
        running = wait_for_job(client, job.id, lambda j: j.status is JobStatus.RUNNING, 60)
        # Reconcile passes have watched the leases for a lease TTL: a lease missing
        # from now on ran out
        wait_until(
            lambda: _watched_for(client) >= bed.settings.lease_ttl,
            60,
            "reconcile passes watching for a lease TTL",
        )
        dead = next(host for host in bed.hosts if host.node == running.node)
        # When its host dies whole
        _kill_host_whole(dead.netns)
        killed = time.monotonic()
        wait_until(
            lambda: client.get(job.id).attempt >= 2 or client.get(job.id).done,
            60,
            "the job requeued",
        )
        requeued_after = time.monotonic() - killed
        done = wait_for_job(client, job.id, lambda j: j.done, 60)
        # Then it ran again on the other host, declared lost within a lease TTL and
        # a reconcile tick (plus a second of scheduling), not two TTLs
        assert done.succeeded and done.node != dead.node, done
        settings_used: Settings = bed.settings
        bound = settings_used.lease_ttl + settings_used.reconcile_interval
        assert requeued_after <= bound + 2, requeued_after
        assert requeued_after < 2 * settings_used.lease_ttl
        attempts = client.rt.registry.attempts(job.id)
        assert [a.exit_reason for a in attempts] == ["lost", "ok"]
