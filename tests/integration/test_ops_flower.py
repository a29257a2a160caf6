"""Flower on ugro's broker, behind a login, seen in a real browser (Debian's Chromium)."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, Response, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.conftest import BIN, ROOT, env_for, running_stack, ugro
from ugro import Client, JobSpec, JobStatus
from ugro.errors import SpecError, StackError
from ugro.ops.flower import auth_file, flower_login
from ugro.settings import Settings
from ugro.transport.queues import control_queue, node_queue, queue_for_gpu

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SECRET = "hunter2-do-not-show"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _status(url: str, auth: str | None = None, method: str = "GET") -> int:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _poll(
    check: Callable[[], bool], timeout: float, what: str, seen: Callable[[], str] = str
) -> None:
    """Poll ``check`` until it holds; past ``timeout``, fail with what was last seen."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}; saw: {seen()}"
        time.sleep(0.25)


def _status_in_browser(page: Page, url: str) -> int | None:
    """The HTTP status the browser got for ``url``; a refusal it cannot get past (no
    credentials to answer the challenge, an empty error page) ends the navigation."""
    seen: dict[str, int] = {}

    def record(response: Response) -> None:
        seen.setdefault(response.url, response.status)

    page.on("response", record)
    try:
        response = page.goto(url)
        return response.status if response is not None else None
    except PlaywrightError as exc:
        assert "ERR_INVALID_AUTH_CREDENTIALS" in str(exc) or "RESPONSE_CODE" in str(exc), exc
        return seen.get(url)
    finally:
        page.remove_listener("response", record)


@contextlib.contextmanager
def flower_process(settings: Settings, port: int, log: Path) -> Iterator[str]:
    """`ugro flower --port PORT` as a user starts it; its URL once it answers."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "ugro"), "flower", "--port", str(port)],
            env=env_for(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _poll(
            lambda: proc.poll() is not None or _status(url + "/") == 401,
            30,
            "Flower to answer",
        )
        assert proc.poll() is None, log.read_text()
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail("Flower did not stop on SIGTERM within 15 s")


@pytest.mark.timeout(180)
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (make system)")
def test_flower_shows_workers_jobs_and_queues_only_after_login(
    settings: Settings, tmp_path: Path
) -> None:
    node = settings.node_name
    gpu_workers = [f"gpu{i}@{node}" for i in range(4)]
    log = tmp_path / "flower.log"
    # Given the stack and `ugro flower` with no login configured
    with (
        running_stack(settings),
        flower_process(settings, _free_port(), log) as url,
        sync_playwright() as playwright,
    ):
        # then a password was generated, kept with mode 0600 and shown once
        login = auth_file(settings).read_text().strip()
        assert stat.S_IMODE(auth_file(settings).stat().st_mode) == 0o600
        assert login.split(":", 1)[1] in log.read_text()
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
        )
        try:
            page = browser.new_page()
            # When a browser comes without credentials, then it is refused
            for path in ("/", "/workers", "/tasks", "/broker", "/api/workers"):
                assert _status_in_browser(page, url + path) == 401, path
            # When it logs in
            header = base64.b64encode(login.encode()).decode()
            browser.set_extra_http_headers({"Authorization": f"Basic {header}"})

            # then the workers page names every GPU worker and the node agent
            def workers_listed() -> bool:
                page.goto(url + "/workers")
                # a name is drawn in two spans (its head may be elided): read the text
                links = page.locator("#workers-table a.worker-name-link").all()
                names = {link.text_content() for link in links}
                return {*gpu_workers, f"agent@{node}"} <= names

            _poll(workers_listed, 30, "every worker on the workers page", page.content)

            # When a job runs to completion (with a secret in its environment)
            with Client(settings) as client:
                job = client.submit(
                    JobSpec(
                        name="flower-seen",
                        command=[sys.executable, "-c", "pass"],
                        env={"MY_API_TOKEN": SECRET},
                    )
                )
                (done,) = client.wait([job.id], timeout=60)
            assert done.status is JobStatus.FINISHED

            # then the tasks page shows its task, with its job id, as succeeded
            def task_succeeded() -> bool:
                page.goto(url + "/tasks")
                row = page.locator("#tasks-table tbody tr", has_text=job.id)
                try:
                    row.first.wait_for(timeout=2000)
                except PlaywrightTimeoutError:
                    return False
                text = row.first.inner_text()
                return "ugro.run_job" in text and "SUCCESS" in text

            _poll(task_succeeded, 30, f"the tasks page to show {job.id} succeeded")
            row = page.locator("#tasks-table tbody tr", has_text=job.id).first.inner_text()
            # without its lease token (a job's task shows job_id, node and gpus
            # only) and nothing of the job's environment
            assert "'job_id'" in row and "token" not in row
            assert SECRET not in page.content()
            # and so does the task's own page
            page.locator("#tasks-table tbody tr", has_text=job.id).first.locator(
                "a[href*='/task/']"
            ).first.click()
            page.wait_for_url("**/task/*")
            detail = page.content()
            assert job.id in detail and "SUCCESS" in detail and "'token'" not in detail
            assert SECRET not in detail

            # and the broker page lists ugro's queues with their depth
            page.goto(url + "/broker")
            queues = page.locator("#queue-table tbody tr")
            names = {q.get_attribute("id") for q in queues.all()}
            assert {queue_for_gpu(settings, node, i) for i in range(4)} <= names
            assert {control_queue(settings), node_queue(settings, node)} <= names
            for queue in queues.all():
                depth = queue.locator("td").nth(1).inner_text().strip()
                assert depth.isdigit(), (queue.get_attribute("id"), depth)
        finally:
            browser.close()

        # and Flower is read-only: it cannot shut a GPU worker down
        shutdown = f"{url}/api/worker/shutdown/{gpu_workers[0]}"
        assert _status(shutdown, login, method="POST") == 403


def test_flower_refuses_to_start_when_redis_is_down(embedded_settings: Settings) -> None:
    # Given no stack running, when `ugro flower` starts, then it says what to do
    result = ugro(embedded_settings, "flower", "--port", str(_free_port()), timeout=30)
    assert result.returncode == 3, result.stderr
    assert "start it with `ugro up`" in result.stderr


def test_generated_login_is_written_once_with_mode_0600(settings: Settings) -> None:
    # Given no UGRO_FLOWER_BASIC_AUTH, when Flower's login is asked for twice
    first = flower_login(settings)
    second = flower_login(settings)
    # then a password was generated the first time only, kept private
    assert first.generated and not second.generated
    assert first.credential == second.credential
    assert first.user == "ugro" and len(first.password) >= 20
    assert stat.S_IMODE(auth_file(settings).stat().st_mode) == 0o600


def test_configured_login_wins_and_a_malformed_one_is_refused(settings: Settings) -> None:
    configured = settings.model_copy(update={"flower_basic_auth": "alice:s3cret:with-colon"})
    login = flower_login(configured)
    assert (login.user, login.password, login.generated) == ("alice", "s3cret:with-colon", False)
    assert not auth_file(settings).exists()
    for bad in ("alice", "alice:", ":pw"):
        with pytest.raises(SpecError, match="UGRO_FLOWER_BASIC_AUTH"):
            flower_login(settings.model_copy(update={"flower_basic_auth": bad}))


def test_a_login_file_others_can_read_is_refused(settings: Settings) -> None:
    flower_login(settings)
    os.chmod(auth_file(settings), 0o644)
    with pytest.raises(StackError, match="chmod 600"):
        flower_login(settings)
