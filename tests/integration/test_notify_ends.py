"""Telling ends, end to end: real workers and beat, and a webhook on loopback
(apprise's ``json://``). With ``UGRO_NOTIFY_ON=failed`` a failure is told and a
success is not; ``--notify`` tells any end, with its exit, duration and best
score; a refused notice is retried; an array is told once, when all of it is
done; with ``UGRO_ALERT_LEVEL=WARNING`` a node going WARNING is alerted."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import (
    make_settings,
    registry_database,
    running_stack,
    ugro,
)
from tests.webhook import Webhook
from ugro import Client, JobSpec, JobStatus
from ugro.settings import Settings

PY = sys.executable


@pytest.fixture(scope="module")
def receiver() -> Iterator[Webhook]:
    made = Webhook()
    yield made
    made.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, receiver: Webhook) -> Iterator[Settings]:
    root = tmp_path_factory.mktemp("notify")
    with registry_database(root) as url:
        settings = make_settings(
            root / "data",
            url,
            gpu_backend="fake:2",
            notify_urls=receiver.url,
            notify_on="failed",
            alert_level="WARNING",
            health_collect_interval=0.3,
            health_min_interval=0.3,
            health_max_interval=1.0,
        )
        with running_stack(settings) as running:
            yield running


@pytest.mark.timeout(60)
def test_a_failure_and_a_job_that_asked_are_told_and_a_refused_notice_is_retried(
    lab: Settings, client: Client, receiver: Webhook
) -> None:
    # Given UGRO_NOTIFY_ON=failed, a job that succeeds without asking
    quiet = client.submit(JobSpec(name="quiet", command=[PY, "-c", "pass"]))
    # and one that fails, whose first notice the webhook refuses
    receiver.refuse("ugro: job broken")
    failing = client.submit(
        JobSpec(name="broken", command=[PY, "-c", "raise SystemExit('bad learning rate')"])
    )
    # and one that asked with --notify, logging a validation score
    told = ugro(
        lab,
        "submit",
        "--name",
        "told",
        "--notify",
        "--epochs",
        "1",
        PY,
        "-c",
        "import ugro; ugro.log_metrics(step=1, epoch=0, val_accuracy=0.91)",
    )
    assert told.returncode == 0, told.stderr
    told_id = told.stdout.strip()
    client.wait([quiet.id, failing.id, told_id], timeout=30)

    # Then the failure is told after its refused first delivery, with its error
    receiver.wait(lambda: bool(receiver.delivered("ugro: job broken")), 30, "the failure")
    [failure] = receiver.delivered("ugro: job broken")
    assert failure["title"] == "ugro: job broken failed"
    assert failing.id in failure["message"] and "exit: error" in failure["message"]
    assert "error:" in failure["message"] and "duration:" in failure["message"]
    first = receiver.titled("ugro: job broken")[0].status
    assert first == 500
    # the job that asked is told its end and best score; the quiet one is not
    receiver.wait(lambda: bool(receiver.delivered("ugro: job told")), 30, "the asked-for end")
    [ended] = receiver.delivered("ugro: job told")
    assert ended["title"] == "ugro: job told finished"
    assert "exit: ok" in ended["message"] and "best score: accuracy=0.91" in ended["message"]
    assert not receiver.delivered("ugro: job quiet")


@pytest.mark.timeout(60)
def test_an_array_is_told_once_when_all_of_it_is_done(
    lab: Settings, client: Client, receiver: Webhook
) -> None:
    # Given an array of three tasks asking to be told, one of which fails
    code = "import os, sys; sys.exit(1 if os.environ['UGRO_ARRAY_INDEX'] == '1' else 0)"
    array = client.submit_array(
        JobSpec(name="sweep", notify="ended", command=[PY, "-c", code]), [0, 1, 2]
    )
    tasks = [job.id for job in client.list() if job.array_id == array.id]
    assert len(tasks) == 3
    done = client.wait(tasks, timeout=30)
    assert sorted(job.status for job in done) == sorted(
        [JobStatus.FINISHED, JobStatus.FAILED, JobStatus.FINISHED]
    )

    # Then one notice tells the whole array, naming its failure; no task is told alone
    title = f"ugro: array {array.id} done"
    receiver.wait(lambda: bool(receiver.delivered(title)), 30, "the array's notice")
    [notice] = receiver.delivered(title)
    assert notice["title"] == f"{title}, 1 of 3 failed"
    assert "2 finished" in notice["message"] and "1 failed" in notice["message"]
    assert not receiver.delivered("ugro: job sweep")
    assert len(receiver.delivered(title)) == 1


@pytest.mark.timeout(60)
def test_a_node_going_warning_is_alerted_with_alert_level_warning(
    lab: Settings, receiver: Webhook
) -> None:
    # Given UGRO_ALERT_LEVEL=WARNING and a node made CRITICAL by a GPU too hot
    # (a level is alerted when it changes: a busy CPU may have made it WARNING already)
    control = lab.data_dir / "fake-gpus.json"
    node = lab.node_name
    control.write_text(json.dumps({f"{node}:1": {"temperature_c": 95}}))
    try:
        critical = f"ugro: node {node} is CRITICAL"
        receiver.wait(lambda: bool(receiver.delivered(critical)), 30, "the CRITICAL alert")

        # When the GPU cools to a warning temperature
        control.write_text(json.dumps({f"{node}:1": {"temperature_c": 86}}))

        # Then the node's WARNING is sent to the notification URLs too
        def warned() -> bool:
            found = receiver.delivered(f"ugro: node {node} is WARNING")
            return any("GPU 1 at 86 C" in b["message"] for b in found)

        receiver.wait(warned, 30, "the WARNING alert")
    finally:
        control.write_text("{}")
