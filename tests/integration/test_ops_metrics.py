"""The Prometheus exporter, scraped over HTTP while jobs run and parsed with
prometheus_client's own parser; its figures match the registry, the GPU-seconds of
each user and group too."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.conftest import (
    BIN,
    ROOT,
    env_for,
    make_settings,
    running_stack,
    wait_for_job,
    wait_until,
)
from tests.sshd import free_port
from ugro import Client, Job, JobSpec, JobStatus
from ugro.settings import Settings

PY = sys.executable


@pytest.fixture
def exporter(tmp_path: Path, database_url: str) -> Iterator[tuple[Settings, str]]:
    settings = make_settings(
        tmp_path / "data", database_url, gpu_backend="fake:2", health_min_interval=0.5
    )
    port = free_port()
    with running_stack(settings):
        process = subprocess.Popen(
            [str(BIN / "ugro"), "exporter", "--port", str(port)],
            env=env_for(settings),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            wait_until(lambda: _answers(url), 30, "the exporter to answer")
            yield settings, url
        finally:
            process.terminate()
            assert process.wait(timeout=10) == 0, process.stderr and process.stderr.read()


def _answers(url: str) -> bool:
    try:
        return bool(scrape(url))
    except OSError:
        return False


def scrape(url: str) -> dict[str, list[Sample]]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    found: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        found.setdefault(family.name, []).extend(family.samples)
    return found


def value(metrics: dict[str, list[Sample]], name: str, **labels: str) -> float:
    [sample] = [
        s
        for s in metrics[name.removesuffix("_bucket").removesuffix("_count")]
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    return sample.value


@pytest.mark.timeout(120)
def test_metrics_match_the_registry_while_jobs_run(exporter: tuple[Settings, str]) -> None:
    settings, url = exporter
    with Client(settings) as client:
        quick = [client.submit(JobSpec(name=f"q{i}", command=[PY, "-c", "pass"])) for i in range(3)]
        failing = client.submit(JobSpec(name="bad", command=[PY, "-c", "raise SystemExit(3)"]))
        client.wait([job.id for job in [*quick, failing]], timeout=60)
        sleepers = [
            client.submit(JobSpec(name=f"s{i}", command=[PY, "-c", "import time; time.sleep(60)"]))
            for i in range(3)
        ]  # two run, one waits
        running = [
            wait_for_job(client, job.id, lambda j: j.status is JobStatus.RUNNING, 30)
            for job in sleepers[:2]
        ]
        wait_until(
            lambda: value(scrape(url), "ugro_queue_depth", queue="pending") == 1,
            30,
            "one job pending",
        )
        metrics = scrape(url)
        statuses = Counter(job.status.value for job in client.list())
        for status in JobStatus:
            assert value(metrics, "ugro_jobs", status=status.value) == statuses[status.value]
        assert statuses["running"] == 2 and statuses["queued"] == 1
        for job in running:
            [gpu] = job.gpu_indices
            labels = {"node": job.node or "", "gpu": str(gpu)}
            assert value(metrics, "ugro_gpu_leased", **labels) == 1
            assert value(metrics, "ugro_gpu_lease_holder_info", job_id=job.id, **labels) == 1
            # The fake GPU reports a busy reading while a job's process runs on it.
            wait_until(
                lambda labels=labels: (
                    value(scrape(url), "ugro_gpu_utilization_ratio", **labels) > 0.5
                ),
                20,
                "a busy GPU reading",
            )
            assert value(metrics, "ugro_gpu_memory_total_bytes", **labels) == 24576 * 2**20
        # First attempts started: an attempt's row follows its process's start, which
        # follows the claim that made the job "running".
        wait_until(
            lambda: value(scrape(url), "ugro_dispatch_latency_seconds_count") == 6,
            20,
            "six first attempts recorded",
        )
        metrics = scrape(url)
        assert value(metrics, "ugro_dispatch_latency_seconds_bucket", le="+Inf") == 6
        assert value(metrics, "ugro_job_duration_seconds_count", outcome="ok") == 3
        assert value(metrics, "ugro_job_duration_seconds_count", outcome="error") == 1
        wait_until(
            lambda: (
                "ugro_node_health_score" in scrape(url) and scrape(url)["ugro_node_health_score"]
            ),
            30,
            "a health sweep",
        )
        metrics = scrape(url)
        assert value(metrics, "ugro_node_breaker_state", node="testnode", state="closed") == 1
        assert 0 <= value(metrics, "ugro_node_health_score", node="testnode") <= 100
        # Every metric the Grafana dashboard queries is one the exporter serves.
        dashboard = json.loads((ROOT / "docker" / "grafana-dashboard.json").read_text())
        queried = {
            re.sub(r"_(bucket|count|sum)$", "", name)
            for panel in dashboard["panels"]
            for target in panel["targets"]
            for name in re.findall(r"ugro_\w+", target["expr"])
        }
        assert queried and queried <= set(metrics), queried - set(metrics)
        for job in sleepers:
            client.cancel(job.id)


def client_as(settings: Settings, user: str) -> Client:
    return Client(settings.model_copy(update={"user": user}))


def gpu_seconds(metrics: dict[str, list[Sample]]) -> dict[tuple[str, str], float]:
    """``ugro_gpu_seconds_total`` by (user, group)."""
    return {
        (s.labels["user"], s.labels["group"]): s.value
        for s in metrics.get("ugro_gpu_seconds", [])
        if s.name == "ugro_gpu_seconds_total"
    }


def recorded_gpu_seconds(client: Client, jobs: list[Job]) -> dict[tuple[str, str], float]:
    """What the registry's attempts of ``jobs`` add up to, by (user, group)."""
    totals: dict[tuple[str, str], float] = {}
    for job in jobs:
        for attempt in client.rt.registry.attempts(job.id):
            assert attempt.ended_at is not None, f"{job.id}: attempt {attempt.number} runs"
            seconds = (attempt.ended_at - attempt.started_at).total_seconds() * job.gpus
            key = (job.user or "", job.group or "")
            totals[key] = totals.get(key, 0.0) + seconds
    return totals


@pytest.mark.timeout(120)
def test_gpu_seconds_count_each_user_s_attempts_ended_and_running(
    exporter: tuple[Settings, str],
) -> None:
    settings, url = exporter
    short = [PY, "-c", "import time; time.sleep(0.5)"]
    with client_as(settings, "alice") as alice, client_as(settings, "bob") as bob:
        # Given jobs of alice (one of them in a group) and of bob (two GPUs) that ran
        ran = [
            alice.submit(JobSpec(name="a1", command=short)),
            alice.submit(JobSpec(name="a2", command=short, group="vision")),
            bob.submit(JobSpec(name="b1", command=short, gpus=2)),
        ]
        ended = alice.wait([job.id for job in ran], timeout=60)
        assert all(job.succeeded for job in ended), [(j.id, j.status) for j in ended]

        # When the exporter is scraped
        counted = gpu_seconds(scrape(url))

        # Then each user and group counts their attempts' GPUs by how long they ran
        recorded = recorded_gpu_seconds(alice, ended)
        assert set(recorded) == {("alice", ""), ("alice", "vision"), ("bob", "")}
        assert counted == pytest.approx(recorded, abs=1e-3)

        # When bob's next job runs, then is cancelled
        sleeper = bob.submit(JobSpec(name="b2", command=[PY, "-c", "import time; time.sleep(60)"]))
        wait_for_job(bob, sleeper.id, lambda j: j.status is JobStatus.RUNNING, 30)
        # (its attempt's row follows its process's start)
        wait_until(
            lambda: gpu_seconds(scrape(url))[("bob", "")] > recorded[("bob", "")],
            20,
            "bob's running attempt counted",
        )
        first = gpu_seconds(scrape(url))[("bob", "")]
        wait_until(lambda: gpu_seconds(scrape(url))[("bob", "")] > first, 10, "the count to grow")
        running = gpu_seconds(scrape(url))
        bob.cancel(sleeper.id)
        [cancelled] = bob.wait(sleeper.id, timeout=30)
        after = gpu_seconds(scrape(url))

        # Then it counted up to each scrape while it ran and, once ended, as long as
        # it ran, never less than before; alice's figures did not move
        recorded = recorded_gpu_seconds(bob, [*ended, cancelled])
        assert after[("bob", "")] >= running[("bob", "")] > first
        assert after == pytest.approx(recorded, abs=1e-3)
        assert after[("alice", "")] == counted[("alice", "")]
