"""Faults a lab meets, on the multi-host bed (tests/hosts.py)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_settings, running_stack, wait_for_job, wait_until
from tests.faults import Sampler, processes_of
from tests.hosts import TestBed, _free_port, _wait_for_port, multi_host_bed
from ugro import Client, JobSpec
from ugro.job import Job
from ugro.jobs.lifecycle import JobStatus
from ugro.ops.redis_server import redis_executable

JOBS = Path(__file__).parents[1] / "jobs"
RECORD = str(JOBS / "record.py")
PY = sys.executable
# Attempt 1 runs until its host dies; attempt 2 ends at once.
LONG_THEN_SHORT = 'if [ "$UGRO_ATTEMPT" = 1 ]; then exec sleep 300; fi; exit 0'
# The same, each start of its process a line in the job's folder.
COUNTED_LONG_THEN_SHORT = 'echo "$UGRO_ATTEMPT" >> "$UGRO_JOB_DIR/starts"; ' + LONG_THEN_SHORT


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


@contextlib.contextmanager
def _one_job_on_two_hosts(
    tmp_path: Path, database_url: str, spec: JobSpec, **timings: float
) -> Iterator[tuple[TestBed, Client, Job]]:
    """Two hosts of one GPU each, beat on the services host, an 8 s lease and a 2 s
    reconcile tick (``timings`` change them), and ``spec`` running on one of them
    once reconcile passes have watched the leases for a lease TTL (a lease missing
    from then on ran out)."""
    values = {"lease_ttl": 8.0, "heartbeat_interval": 1.0, "reconcile_interval": 2.0}
    settings = make_settings(tmp_path / "data", database_url, worker_ttl=6.0, **(values | timings))
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
        job = client.submit(spec)
        running = wait_for_job(client, job.id, lambda j: j.status is JobStatus.RUNNING, 60)
        wait_until(
            lambda: _watched_for(client) >= bed.settings.lease_ttl,
            60,
            "reconcile passes watching for a lease TTL",
        )
        yield bed, client, running


@pytest.mark.timeout(180)
def test_a_node_that_dies_whole_has_its_job_requeued_within_a_lease_ttl_and_a_tick(
    tmp_path: Path, database_url: str
) -> None:
    spec = JobSpec(name="victim", max_retries=1, shell=True, command=[LONG_THEN_SHORT])
    with _one_job_on_two_hosts(tmp_path, database_url, spec) as (bed, client, job):
        dead = next(host for host in bed.hosts if host.node == job.node)
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
        ttl, tick = bed.settings.lease_ttl, bed.settings.reconcile_interval
        assert requeued_after <= ttl + tick + 2, requeued_after
        assert requeued_after < 2 * ttl
        attempts = client.rt.registry.attempts(job.id)
        assert [a.exit_reason for a in attempts] == ["lost", "ok"]


@pytest.mark.timeout(240)
def test_a_partitioned_node_stops_its_job_itself_and_the_job_runs_elsewhere_once(
    tmp_path: Path, database_url: str
) -> None:
    spec = JobSpec(name="partitioned", max_retries=1, shell=True, command=[COUNTED_LONG_THEN_SHORT])
    timings = {"fence_grace": 4.0, "stop_grace": 2.0}
    with _one_job_on_two_hosts(tmp_path, database_url, spec, **timings) as (bed, client, job):
        cut = next(host for host in bed.hosts if host.node == job.node)
        jobs = bed.settings.jobs_dir
        with Sampler(client, gpus=2) as sampler:
            # When its host is cut off from Redis and the registry
            bed.pull_cable(cut)
            pulled = time.monotonic()
            try:
                # Then its job stops itself after the fence grace, before its lease
                # could run out
                wait_until(
                    lambda: all(p["UGRO_ATTEMPT"] != "1" for p in processes_of(jobs, job.id)),
                    30,
                    "the cut-off job to stop itself",
                )
                stopped_after = time.monotonic() - pulled
                assert stopped_after < bed.settings.lease_ttl, stopped_after
                # and the rest of the cluster runs it on the other host, once
                done = wait_for_job(client, job.id, lambda j: j.done, 90)
                assert done.succeeded and done.node != cut.node, done
            finally:
                bed.plug_cable(cut)
            # When the link is back, its GPU rejoins, and the job ran no more
            wait_until(
                lambda: any(w.node == cut.node for w in client.rt.live.workers(6.0)),
                90,
                "the cut-off host's GPU to rejoin",
            )
        assert sampler.most_attempts_at_once <= 1
        assert sampler.most_leases <= 2
        starts = (done.job_dir / "starts").read_text().split()
        assert starts == ["1", "2"]
        assert client.get(job.id).status is JobStatus.FINISHED


class _DeploymentRedis:
    """A Redis server as the deployment runs one: its own process, a password, an
    append-only file; restarted as its service manager would (SIGTERM, start)."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self.password = secrets.token_hex(12)
        self.port = _free_port("127.0.0.1")
        self.conf = where / "redis.conf"
        self.conf.write_text(
            f"bind 127.0.0.1\nport {self.port}\nrequirepass {self.password}\n"
            f'appendonly yes\nappendfsync everysec\nsave ""\ndir {where}\n'
            "maxmemory-policy noeviction\n"
        )
        self.conf.chmod(0o600)
        self.server: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.server = subprocess.Popen(
            [redis_executable(), str(self.conf)], stdout=subprocess.DEVNULL
        )
        _wait_for_port("127.0.0.1", self.port, self.server)

    def stop(self) -> None:
        if self.server is not None:
            self.server.terminate()  # a clean shutdown writes the append-only file out
            self.server.wait(timeout=20)

    def forget(self) -> None:
        """Remove what it kept: the next start is empty."""
        for path in self.where.glob("appendonly*"):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("kept", ["append-only file", "nothing"])
def test_a_redis_restart_under_load_loses_no_job_runs_none_twice_and_keeps_the_order(
    tmp_path: Path, database_url: str, kept: str
) -> None:
    redis_server = _DeploymentRedis(tmp_path)
    redis_server.start()
    settings = make_settings(
        tmp_path / "data", database_url, redis_url=redis_server.url, redis_prefix="ugro"
    )
    out = tmp_path / "runs.jsonl"
    try:
        with running_stack(settings), Client(settings) as client:
            # Given 4 jobs running and 50 queued behind them
            running = [
                client.submit(JobSpec(name=f"long{i}", command=[PY, RECORD, str(out), "4"]))
                for i in range(4)
            ]
            for job in running:
                wait_for_job(client, job.id, lambda j: j.status is JobStatus.RUNNING, 30)
            queued = client.submit_many(
                [JobSpec(name=f"q{i}", command=[PY, RECORD, str(out), "0.05"]) for i in range(50)]
            )
            # When Redis restarts, keeping its append-only file or nothing
            redis_server.stop()
            if kept == "nothing":
                redis_server.forget()
            redis_server.start()
            jobs = running + queued
            done = client.wait([job.id for job in jobs], timeout=150)
            # Then every job ran, once, the running ones in their first attempt
            assert all(job.status is JobStatus.FINISHED for job in done), [
                (job.name, job.status) for job in done if not job.succeeded
            ]
            ran = [json.loads(line)["job_id"] for line in out.read_text().splitlines()]
            assert sorted(ran) == sorted(job.id for job in jobs)
            assert all(job.attempt == 1 for job in done)
            # and the queue kept its order: each queued job started no later than
            # the ones queued after it (to the jitter of starting processes)
            starts = {
                r["job_id"]: r["start"] for r in map(json.loads, out.read_text().splitlines())
            }
            order = [starts[job.id] for job in queued]
            assert all(later >= earlier - 0.5 for earlier, later in itertools.pairwise(order))
    finally:
        redis_server.stop()
