"""Telling ends, end to end: real workers and beat, and a webhook on loopback
(apprise's ``json://``). With ``UGRO_NOTIFY_ON=failed`` a failure is told and a
success is not; ``--notify`` tells any end, with its exit, duration and best
score; a refused notice is retried; an array is told once, when all of it is
done; with ``UGRO_ALERT_LEVEL=WARNING`` a node going WARNING is alerted."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.conftest import (
    make_settings,
    registry_database,
    running_stack,
    ugro,
)
from ugro import Client, JobSpec, JobStatus
from ugro.settings import Settings

PY = sys.executable


class Receiver:
    """A webhook on loopback that refuses (500) the first POST whose title starts
    with one of ``refused``, accepts the rest, and keeps what came."""

    def __init__(self) -> None:
        self.refused: list[str] = []
        self.posts: list[tuple[int, dict[str, Any]]] = []
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver.changed:
                    status = 200
                    for prefix in receiver.refused:
                        if body["title"].startswith(prefix):
                            receiver.refused.remove(prefix)
                            status = 500
                            break
                    receiver.posts.append((status, body))
                    receiver.changed.notify_all()
                self.send_response(status)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.server.server_port}/hook"

    def delivered(self, title: str) -> list[dict[str, Any]]:
        """The notices accepted whose title starts with ``title``."""
        with self.changed:
            return [b for s, b in self.posts if s == 200 and b["title"].startswith(title)]

    def wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not condition():
                left = deadline - time.monotonic()
                assert left > 0, f"timed out waiting for {what}; got {self.posts}"
                self.changed.wait(left)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.server.shutdown()
    made.server.server_close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Settings]:
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
    lab: Settings, client: Client, receiver: Receiver
) -> None:
    # Given UGRO_NOTIFY_ON=failed, a job that succeeds without asking
    quiet = client.submit(JobSpec(name="quiet", command=[PY, "-c", "pass"]))
    # and one that fails, whose first notice the webhook refuses
    receiver.refused.append("ugro: job broken")
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
    first = next(s for s, b in receiver.posts if b["title"].startswith("ugro: job broken"))
    assert first == 500
    # the job that asked is told its end and best score; the quiet one is not
    receiver.wait(lambda: bool(receiver.delivered("ugro: job told")), 30, "the asked-for end")
    [ended] = receiver.delivered("ugro: job told")
    assert ended["title"] == "ugro: job told finished"
    assert "exit: ok" in ended["message"] and "best score: accuracy=0.91" in ended["message"]
    assert not receiver.delivered("ugro: job quiet")


@pytest.mark.timeout(60)
def test_an_array_is_told_once_when_all_of_it_is_done(
    lab: Settings, client: Client, receiver: Receiver
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
    lab: Settings, receiver: Receiver
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
