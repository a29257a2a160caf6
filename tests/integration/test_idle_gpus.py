"""Idle GPUs that are held, end to end: real workers, agent and beat on simulated
GPUs; two running jobs whose GPUs are made to read idle (the fake backend's
control file) are flagged by the health sweep, and the one submitted with
``--on-idle stop`` is stopped."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest
from prometheus_client.core import Metric

from tests.conftest import (
    make_settings,
    registry_database,
    running_stack,
    ugro,
    wait_for_job,
    wait_until,
)
from ugro import Client, JobSpec, JobStatus
from ugro.ops.metrics import UgroCollector
from ugro.settings import Settings
from ugro.summary.day import timezone_of, today
from ugro.summary.gather import build_summary
from ugro.summary.render import render_markdown

PY = sys.executable
SLEEP = [PY, "-c", "import time; time.sleep(120)"]
IDLE = {
    "gpu_backend": "fake:2",
    "health_collect_interval": 0.3,
    "health_min_interval": 0.3,
    "health_max_interval": 1.0,
    "idle_gpu_after": 1.0,
}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    root = tmp_path_factory.mktemp("idle")
    with (
        registry_database(root) as url,
        running_stack(make_settings(root / "data", url, **IDLE)) as running,
    ):
        yield running


def _events(client: Client, kind: str) -> dict[str | None, str]:
    return {e.job_id: e.message for e in client.rt.registry.events() if e.kind == kind}


def _idle_metric(client: Client) -> list[tuple[dict[str, str], float]]:
    found: list[Metric] = [
        m for m in UgroCollector(client.rt).collect() if m.name == "ugro_gpu_held_idle_seconds"
    ]
    return [(s.labels, s.value) for m in found for s in m.samples]


@pytest.mark.timeout(60)
def test_a_held_gpu_that_idles_is_flagged_and_an_on_idle_stop_job_is_stopped(
    lab: Settings, client: Client
) -> None:
    # Given two running jobs, one asking to be stopped when it idles
    warned = client.submit(JobSpec(name="idle-warn", command=SLEEP))
    stopped = ugro(lab, "submit", "--name", "idle-stop", "--on-idle", "stop", *SLEEP)
    assert stopped.returncode == 0, stopped.stderr
    stop_id = stopped.stdout.strip()
    running = [
        wait_for_job(client, job, lambda j: j.status is JobStatus.RUNNING, 30)
        for job in (warned.id, stop_id)
    ]
    # (both read busy while their processes run: nothing is flagged yet)
    assert not _events(client, "gpu_idle")

    # When both their GPUs read idle for longer than UGRO_IDLE_GPU_AFTER
    control = {f"{lab.node_name}:{job.gpu_indices[0]}": {"utilization": 0} for job in running}
    (lab.data_dir / "fake-gpus.json").write_text(json.dumps(control))

    # Then each is flagged once: an event and a line in its console
    wait_until(lambda: len(_events(client, "gpu_idle")) == 2, 20, "both GPUs flagged")
    events = _events(client, "gpu_idle")
    assert "held idle: under 5 % utilisation" in events[warned.id]
    assert "stopping it" in events[stop_id] and "stopping it" not in events[warned.id]
    console = client.rt.paths(warned.id).console.read_text()
    assert "held idle" in console

    # The on-idle job is stopped; the other runs on, shown in `ugro nodes --gpus`
    # with a WARNING and in the metric
    ended = wait_for_job(client, stop_id, lambda j: j.status.is_terminal, 20)
    assert "stopped by ugro" in (ended.error or "")
    assert (ended.status, ended.exit_reason) == (JobStatus.FAILED, "idle")
    assert client.get(warned.id).status is JobStatus.RUNNING
    shown = ugro(lab, "nodes", "--gpus")
    assert shown.returncode == 0, shown.stderr
    assert "WARNING" in shown.stdout and warned.id in shown.stdout
    assert f"held idle by job {warned.id}" in shown.stdout
    labels = [labels for labels, value in _idle_metric(client) if value >= 1.0]
    assert any(found["job"] == warned.id for found in labels)

    # And the daily summary counts the stretches and the GPU-hours they held
    day = today(timezone_of(lab))
    summary = build_summary(client.rt.registry, lab, day)
    assert summary.resources.idle_held_gpus == 2
    assert summary.resources.idle_held_gpu_hours > 0
    assert "Idle held GPUs: 2 flagged" in render_markdown(summary)

    # A flagged GPU is not flagged again while it stays idle
    client.cancel(warned.id)
    wait_for_job(client, warned.id, lambda j: j.status.is_terminal, 20)
    assert len(_events(client, "gpu_idle")) == 2
    (lab.data_dir / "fake-gpus.json").write_text("{}")
