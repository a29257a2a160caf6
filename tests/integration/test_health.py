"""Node health end to end: real workers and agents on two nodes, a simulated GPU
that fails, the breaker opening, dispatch keeping jobs off the node, and the
node coming back by itself."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    BIN,
    env_for,
    make_settings,
    running_stack,
    ugro,
    wait_for_job,
    wait_until,
)
from ugro import Client, JobSpec, JobStatus
from ugro.registry.store import Registry
from ugro.settings import Settings

PY = sys.executable
HEALTH = {
    "gpu_backend": "fake:2",
    "health_collect_interval": 0.3,
    "health_min_interval": 0.3,
    "health_max_interval": 1.0,
    "breaker_failures": 3,
    "breaker_open_seconds": 3.0,
    "worker_ttl": 2.0,
}


@pytest.fixture
def two_nodes(tmp_path: Path, database_url: str) -> Iterator[tuple[Settings, Settings]]:
    node_a = make_settings(tmp_path / "data", database_url, node_name="a", **HEALTH)
    node_b = node_a.model_copy(update={"node_name": "b"})
    with running_stack(node_a):
        worker_b = subprocess.Popen(
            [str(BIN / "ugro"), "worker"],
            env=env_for(node_b),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            yield node_a, node_b
        finally:
            worker_b.terminate()
            worker_b.wait(timeout=60)


def _health(client: Client, node: str) -> dict[str, object]:
    found = {entry["node"]: entry["health"] for entry in client.nodes()}
    return found.get(node) or {}


def _gpus(client: Client, node: str) -> list[dict[str, object]]:
    found = {entry["node"]: entry["gpus"] for entry in client.nodes()}
    return list(found.get(node) or [])


def _events(settings: Settings, kind: str, node: str) -> list[str]:
    registry = Registry(settings.effective_database_url)
    try:
        return [e.message for e in registry.events() if e.kind == kind and e.node == node]
    finally:
        registry.close()


def _fail_gpu(settings: Settings, node: str, index: int | None) -> None:
    control = settings.data_dir / "fake-gpus.json"
    failing = {} if index is None else {f"{node}:{index}": {"fail": "fell off the bus"}}
    control.write_text(json.dumps(failing))


@pytest.mark.timeout(150)
def test_a_failed_gpu_opens_the_breaker_keeps_jobs_off_and_the_node_comes_back(
    two_nodes: tuple[Settings, Settings],
) -> None:
    node_a, _ = two_nodes
    with Client(node_a) as client:
        wait_until(lambda: _health(client, "b").get("breaker") == "closed", 60, "b swept")
        wait_until(lambda: _health(client, "a").get("breaker") == "closed", 60, "a swept")
        # b's agent may be swept before its GPU workers are up: wait for them too.
        wait_until(lambda: len(_gpus(client, "b")) == 2, 60, "b's GPU workers")
        # A job already running on b when it goes bad is left alone, and named.
        sleeper = client.submit(
            JobSpec(name="on-b", node="b", command=[PY, "-c", "import time; time.sleep(120)"])
        )
        running = wait_for_job(client, sleeper.id, lambda j: j.status is JobStatus.RUNNING, 30)
        [held] = running.gpu_indices
        _fail_gpu(node_a, "b", 1 - held)

        wait_until(lambda: _health(client, "b").get("level") == "CRITICAL", 30, "b CRITICAL")
        reasons = _health(client, "b")["reasons"]
        assert isinstance(reasons, list)
        assert f"GPU {1 - held} not answering: fell off the bus" in reasons
        # Dispatch keeps new jobs off b: unpinned ones land on a, a pinned one waits.
        spread = [
            client.submit(JobSpec(name=f"s{i}", command=[PY, "-c", "pass"])) for i in range(3)
        ]
        pinned = client.submit(JobSpec(name="pinned", node="b", command=[PY, "-c", "pass"]))
        done = client.wait([job.id for job in spread], timeout=60)
        assert all(job.succeeded and job.node == "a" for job in done)
        waiting = client.get(pinned.id)
        assert waiting.status is JobStatus.QUEUED
        assert "node unhealthy" in client.why_waiting(pinned.id)

        wait_until(lambda: _events(node_a, "breaker_open", "b"), 30, "b's breaker to open")
        [opened] = _events(node_a, "breaker_open", "b")
        assert "after 3 failed checks" in opened and sleeper.id in opened
        assert client.get(sleeper.id).status is JobStatus.RUNNING  # left alone
        assert _events(node_a, "health_critical", "b")

        # b recovers: after the window the half-open check closes the breaker,
        # and the pinned job that waited for b runs there.
        _fail_gpu(node_a, "b", None)
        wait_until(lambda: _events(node_a, "breaker_closed", "b"), 60, "b's breaker to close")
        [ran] = client.wait(pinned.id, timeout=60)
        assert ran.succeeded and ran.node == "b"
        assert _health(client, "b")["breaker"] == "closed"
        assert _events(node_a, "breaker_open", "a") == []

        shown = ugro(node_a, "nodes", "--json")
        assert shown.returncode == 0, shown.stderr
        rows = {entry["node"]: entry for entry in json.loads(shown.stdout)}
        assert rows["b"]["health"]["score"] >= 80 and len(rows["b"]["gpus"]) == 2
        history = ugro(node_a, "nodes", "--history", "10m", "--node", "b", "--json")
        levels = [sample["level"] for sample in json.loads(history.stdout)]
        assert "CRITICAL" in levels and levels[-1] != "CRITICAL"
        client.cancel(sleeper.id)
