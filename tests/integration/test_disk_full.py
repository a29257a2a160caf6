"""The data dir full: a small filesystem of its own (a tmpfs the test mounts) that a
job fills. The lab's Redis and registry live elsewhere, as in a lab whose data dir
is a shared filesystem; the stack's own logs and pid files are on the full one.

A job that fills it fails ``disk_full`` and is not retried; the other jobs' trees
stay whole; the registry and Redis agree and the GPU is free again; a submit that
cannot make its tree is refused (exit 3) and leaves nothing; the node's health is
CRITICAL and says why; once space is freed, jobs run again.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    TEST_REDIS_URL,
    make_settings,
    registry_database,
    running_stack,
    ugro,
    wait_for_job,
    wait_until,
)
from ugro import Client, JobSpec, JobStatus
from ugro.execution.runner import RunControl, run_command
from ugro.job import Job
from ugro.jobs.disk import free_space
from ugro.jobs.lifecycle import ExitReason
from ugro.ops.redis_server import EmbeddedRedis
from ugro.settings import Settings
from ugro.transport.queues import queue_for_gpu

PY = sys.executable
NODE = "testnode"
GPUS = [0, 1, 2, 3]
#: Writes its checkpoint until the filesystem refuses (Python raises ENOSPC).
FILL = (
    "import os\n"
    "with open(os.path.join(os.environ['UGRO_CHECKPOINT_DIR'], 'fill.bin'), 'wb') as f:\n"
    "    while True:\n"
    "        f.write(b'x' * 65536)\n"
    "        f.flush()\n"
)
#: Runs until the file named by its argument exists (outside the data dir).
WAIT_FOR = "import os, sys, time\nwhile not os.path.exists(sys.argv[1]):\n    time.sleep(0.05)\n"


@contextlib.contextmanager
def small_filesystem(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where``, unmounted however the test ends."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode=0755"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=True)  # still in use: detach


@contextlib.contextmanager
def lab_redis(root: Path) -> Iterator[str]:
    """The URL of a Redis server outside the data dir: the test server when one is
    given, else an embedded one in a folder of its own."""
    if TEST_REDIS_URL:
        yield TEST_REDIS_URL
        return
    services = make_settings(root / "services", "sqlite://", redis_url=None)
    server = EmbeddedRedis(services)
    server.start()
    try:
        yield services.effective_redis_url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A stack whose data dir is an 8 MB filesystem of its own. Health is read and
    swept every second, and a breaker opened by the full disk closes 2 s later, so
    that the test sees the node recover once space is freed."""
    root = tmp_path_factory.mktemp("diskfull")
    with (
        lab_redis(root) as redis_url,
        registry_database(root) as database_url,
        small_filesystem(root / "data", "8m") as data,
    ):
        settings = make_settings(
            data,
            database_url,
            redis_url=redis_url,
            disk_critical_free_mb=1.0,
            health_collect_interval=0.5,
            health_min_interval=1.0,
            health_max_interval=1.0,
            breaker_open_seconds=2.0,
        )
        with running_stack(settings) as running:
            yield running


def ended(job: Job) -> bool:
    return job.status.is_terminal


def read_json(path: Path) -> dict[str, object]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), path
    return data


def leased(client: Client) -> dict[int, str | None]:
    return client.rt.live.leases.lease_holders(NODE, GPUS)


def health(client: Client) -> dict[str, object]:
    nodes = {entry["node"]: entry for entry in client.nodes()}
    return nodes.get(NODE, {}).get("health") or {}


def tree_listing(settings: Settings) -> set[str]:
    return set(os.listdir(settings.jobs_dir))


@pytest.mark.timeout(120)
def test_a_job_that_fills_the_data_dir_fails_disk_full_and_the_rest_holds(
    lab: Settings, client: Client, tmp_path: Path
) -> None:
    # given: a job that finished before, and one running beside the one that fills
    before = client.submit(JobSpec(name="before", command=[PY, "-c", "print('done')"]))
    before = wait_for_job(client, before.id, ended, 30)
    assert before.status is JobStatus.FINISHED
    flag = tmp_path / "neighbour-may-end"
    neighbour = client.submit(JobSpec(name="neighbour", command=[PY, "-c", WAIT_FOR, str(flag)]))
    wait_for_job(client, neighbour.id, lambda j: j.status is JobStatus.RUNNING, 30)

    # when: a job writes until the data dir is full (retries allowed: none is used)
    filler = client.submit(JobSpec(name="filler", command=[PY, "-c", FILL], max_retries=2))
    filled = wait_for_job(client, filler.id, ended, 60)

    # then: it failed disk_full, on its first attempt, and says so
    space = free_space(lab.data_dir)
    assert space is not None and space.nearly_full
    assert filled.status is JobStatus.FAILED
    assert (filled.exit_reason, filled.attempt) == (ExitReason.DISK_FULL, 1)
    assert filled.error and "no space left" in filled.error.lower()
    attempts = client.rt.registry.attempts(filler.id)
    assert [a.exit_reason for a in attempts] == [ExitReason.DISK_FULL]
    status = ugro(lab, "status", filler.id)
    assert status.returncode == 0, status.stderr
    assert "disk_full" in status.stdout

    # and the registry and Redis agree: its live record failed, its GPU's lease gone
    wait_until(
        lambda: client.rt.live.job(filler.id).get("status") == "failed",
        10,
        "the live record of the failed job",
    )
    neighbour_gpu = client.get(neighbour.id).gpu_indices
    wait_until(
        lambda: [i for i, holder in leased(client).items() if holder] == neighbour_gpu,
        10,
        "only the neighbour's GPU leased",
        report=lambda: str(leased(client)),
    )

    # and a submit that cannot make its tree is refused, leaving nothing behind
    listing = tree_listing(lab)
    count = len(client.rt.registry.list_jobs())
    refused = ugro(lab, "submit", "--name", "late", "--", PY, "-c", "pass")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "no space left" in refused.stderr and "nothing was submitted" in refused.stderr
    assert tree_listing(lab) == listing  # no tree, no hidden half-made one
    assert len(client.rt.registry.list_jobs()) == count
    redis = client.rt.live.redis
    keys = client.rt.live.keys
    assert redis.zcard(keys.pending) == 0 and redis.zcard(keys.delayed) == 0
    assert all(redis.llen(queue_for_gpu(lab, NODE, i)) == 0 for i in GPUS)

    # and the node's health is CRITICAL, naming the full data dir
    wait_until(
        lambda: health(client).get("level") == "CRITICAL",
        20,
        "the node's health CRITICAL",
        report=lambda: str(health(client)),
    )
    reasons = health(client).get("reasons")
    assert isinstance(reasons, list) and any("data dir full" in r for r in reasons)
    shown = ugro(lab, "nodes")
    assert shown.returncode == 0 and "data dir full" in shown.stdout, shown.stderr

    # and the neighbour, ending on the full disk, finishes; its tree stays whole
    flag.touch()
    done = wait_for_job(client, neighbour.id, ended, 30)
    assert done.status is JobStatus.FINISHED and done.exit_reason == ExitReason.OK
    wait_until(lambda: not any(leased(client).values()), 10, "every GPU free")
    for job_id in (before.id, neighbour.id, filler.id):
        root = lab.jobs_dir / job_id
        assert read_json(root / "config.json")["job_id"] == job_id
        metadata = read_json(root / "metadata.json")
        assert metadata["job_id"] == job_id and metadata["start"]
        assert not [name for name in os.listdir(root) if name.endswith(".tmp")]
    finished = read_json(lab.jobs_dir / before.id / "metadata.json")
    assert finished["exit_reason"] == "ok" and finished["end"] is not None

    # when space is freed, the node recovers and jobs run again
    (lab.jobs_dir / filler.id / "checkpoints" / "fill.bin").unlink()
    wait_until(
        lambda: health(client).get("level") != "CRITICAL",
        20,
        "the node's health back from CRITICAL",
        report=lambda: str(health(client)),
    )
    after = client.submit(JobSpec(name="after", command=[PY, "-c", "print('room again')"]))
    after = wait_for_job(client, after.id, ended, 30)
    assert after.status is JobStatus.FINISHED


@pytest.mark.timeout(60)
def test_the_runner_tells_a_full_disk_from_other_failures(tmp_path: Path) -> None:
    """Run on a 4 MB filesystem of its own, outside any stack: what the log says,
    and how full the filesystem is as the job ends, decide."""
    control = RunControl(
        heartbeat=lambda: True, interval=1.0, stop=threading.Event(), timeout=30, grace=1.0
    )

    def run(folder: Path, code: str) -> tuple[ExitReason, str | None]:
        folder.mkdir()
        info = run_command([PY, "-c", code], dict(os.environ), folder, folder / "job.log", control)
        return info.reason, info.error

    with small_filesystem(tmp_path / "small", "4m") as small:
        # a plain failure with room left is an error
        reason, error = run(small / "plain", "raise SystemExit('bad config')")
        assert (reason, error) == (ExitReason.ERROR, "exit code 1")
        # a log that says the disk was full is enough, whatever room is left now
        says = "import sys; print('OSError: [Errno 28] No space left on device'); sys.exit(1)"
        reason, error = run(small / "said", says)
        assert (reason, error) == (
            ExitReason.DISK_FULL,
            "OSError: [Errno 28] No space left on device",
        )
        # a job that filled it and could not even log why: the filesystem is full
        fill = "f = open('fill.bin', 'wb')\nwhile True:\n    f.write(b'x' * 4096)\n    f.flush()\n"
        reason, error = run(small / "filled", fill)
        assert reason is ExitReason.DISK_FULL and error and "no space left" in error.lower()
