"""The web dashboard (`ugro web`) on a real stack, seen in a real browser (Debian's
Chromium through Playwright) and through its HTTP API: login, live job rows,
progress, log tail, cancel, the GPU grid, and what it refuses."""

from __future__ import annotations

import base64
import contextlib
import http.client
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from bench.web_load import sse_events
from tests.conftest import (
    BIN,
    ROOT,
    env_for,
    make_settings,
    registry_database,
    running_stack,
    wait_for_job,
    wait_until,
)
from ugro import Client, JobSpec, JobStatus
from ugro.live.keys import Keys
from ugro.settings import Settings
from ugro.web.auth import auth_file

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
DOCS = ROOT / "docs"
TRAIN = str(ROOT / "examples" / "train.py")
PY = sys.executable
SECRET = "hunter2-not-for-the-page"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _trainer(name: str, epochs: int, seconds: float, **spec: Any) -> JobSpec:
    command = [PY, TRAIN, "--epochs", str(epochs), "--epoch-seconds", str(seconds)]
    return JobSpec(name=name, epochs=epochs, command=command, **spec)


class Web:
    """The dashboard as a user started it: its URL and login."""

    def __init__(self, url: str, credential: str, log: Path) -> None:
        self.url = url
        self.credential = credential
        self.log = log
        user, _, password = credential.partition(":")
        self.http = httpx.Client(base_url=url, auth=(user, password), timeout=10)

    @property
    def header(self) -> str:
        return "Basic " + base64.b64encode(self.credential.encode()).decode()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    root = tmp_path_factory.mktemp("web")
    with registry_database(root) as url:
        settings = make_settings(root / "data", url, health_collect_interval=1.0)
        with running_stack(settings) as running:
            yield running


@pytest.fixture(scope="module")
def web(lab: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    """`ugro web --port P` with no login configured, until the module ends."""
    port = _free_port()
    log = tmp_path_factory.mktemp("web-log") / "web.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "ugro"), "web", "--port", str(port)],
            env=env_for(lab),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert proc.poll() is None, log.read_text()
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(url + "/jobs", timeout=2).status_code == 401
        return False

    wait_until(answers, 30, "the dashboard to answer", log.read_text)
    credential = auth_file(lab).read_text().strip()
    try:
        yield Web(url, credential, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail("the dashboard did not stop on SIGTERM within 15 s")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, one for the module."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def browser(web: Web, chromium: Browser) -> Iterator[BrowserContext]:
    """A logged-in browsing context (its requests carry the login, event streams too)."""
    context = chromium.new_context(
        viewport={"width": 1400, "height": 900},
        extra_http_headers={"Authorization": web.header},
    )
    try:
        yield context
    finally:
        context.close()


def _bar(page: Page, job_id: str) -> float:
    value = page.locator(f'tr[data-job="{job_id}"] [role=progressbar]').get_attribute(
        "aria-valuenow"
    )
    return float(value) if value else 0.0


@pytest.mark.timeout(60)
def test_the_login_is_generated_once_and_nothing_is_served_without_it(
    lab: Settings, web: Web
) -> None:
    # Given the dashboard started with no login configured, then a password was
    # generated, kept with mode 0600 and shown once on its terminal
    assert stat.S_IMODE(auth_file(lab).stat().st_mode) == 0o600
    assert web.credential.split(":", 1)[1] in web.log.read_text()
    # When a request comes without credentials, or with wrong ones, then it is refused
    paths = ["/", "/jobs", "/gpus", "/api/jobs", "/api/gpus", "/events", "/static/dashboard.js"]
    for path in paths:
        response = httpx.get(web.url + path, timeout=5)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"].startswith("Basic")
        wrong = httpx.get(web.url + path, auth=("ugro", "wrong"), timeout=5)
        assert wrong.status_code == 401, path
    # and with them it is served
    assert web.http.get("/api/jobs").status_code == 200


@pytest.mark.timeout(60)
def test_a_browser_without_credentials_gets_401(web: Web, chromium: Browser) -> None:
    context = chromium.new_context()  # no login
    try:
        page = context.new_page()
        seen: list[int] = []
        page.on("response", lambda response: seen.append(response.status))
        with contextlib.suppress(Exception):  # Chromium may end the navigation
            page.goto(web.url + "/jobs")
        assert seen and seen[0] == 401
        assert 200 not in seen  # nothing of the page was served
    finally:
        context.close()


@pytest.mark.timeout(60)
def test_the_log_endpoint_and_job_ids_refuse_traversal(lab: Settings, web: Web) -> None:
    # Given a job that exists
    with Client(lab) as client:
        job = client.submit(JobSpec(name="tiny", command=[PY, "-c", "print('hi')"]))
        client.wait(job.id, timeout=30)
    # When paths climb out of the tree, raw (no client normalising them)
    climbs = [
        "/api/jobs/../../../etc/passwd/log",
        "/api/jobs/..%2F..%2F..%2Fetc%2Fpasswd/log",
        "/api/jobs/%2e%2e/log",
        "/api/jobs/..%2f/log",
        "/events/jobs/..%2F..%2Fetc",
        "/jobs/..%2F..%2Fetc%2Fpasswd",
        f"/api/jobs/{job.id}/log?node=../../../etc",
        f"/api/jobs/{job.id}/log?rank=../1",
        f"/api/jobs/{job.id}/log?rank=-1",
        f"/api/jobs/{job.id}/log?attempt=99",
        "/summaries/charts/..%2F..%2Fregistry.sqlite3",
        "/api/summaries/..%2F..%2Fetc%2Fpasswd",
    ]
    host, port = web.url.removeprefix("http://").split(":")
    for path in climbs:
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("GET", path, headers={"Authorization": web.header})
        response = conn.getresponse()
        body = response.read().decode(errors="replace")
        conn.close()
        # then each is refused, and nothing outside the job's folder is read
        assert response.status in (400, 404), (path, response.status, body[:200])
        assert "root:" not in body and "SQLite" not in body, path
    # while the job's own log is served
    assert web.http.get(f"/api/jobs/{job.id}/log").text.strip() == "hi"


@pytest.mark.timeout(60)
def test_actions_need_the_pages_csrf_token_and_origin(lab: Settings, web: Web) -> None:
    with Client(lab) as client:
        sleep = [PY, "-c", "import time; time.sleep(60)"]
        job = client.submit(JobSpec(name="sleeper", command=sleep))
        wait_for_job(client, job.id, lambda j: j.status is JobStatus.RUNNING, 30)
        token = _csrf(web)
        url = f"/actions/jobs/{job.id}/cancel"
        # When a logged-in browser is made to post from another site, then it is refused
        assert web.http.post(url).status_code == 403
        assert web.http.post(url, headers={"x-csrf-token": "0" * 64}).status_code == 403
        evil = {"x-csrf-token": token, "origin": "http://evil.example"}
        assert web.http.post(url, headers=evil).status_code == 403
        assert web.http.get(url).status_code == 405
        assert client.get(job.id).status is JobStatus.RUNNING
        # and from the dashboard's own page it is done
        ours = {"x-csrf-token": token, "origin": web.url}
        assert web.http.post(url, headers=ours).status_code == 200
        done = wait_for_job(client, job.id, lambda j: j.done, 30)
        assert done.status is JobStatus.CANCELLED
        # and a retry of the cancelled job queues it again
        retried = web.http.post(f"/actions/jobs/{job.id}/retry", headers=ours)
        assert retried.status_code == 200, retried.text
        wait_for_job(client, job.id, lambda j: j.status is JobStatus.RUNNING, 30)
        client.cancel(job.id, grace=1)
        wait_for_job(client, job.id, lambda j: j.done, 30)


def _csrf(web: Web) -> str:
    html = web.http.get("/jobs").text
    marker = 'name="csrf-token" content="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


@pytest.mark.timeout(120)
def test_a_job_is_followed_live_in_the_browser_and_cancelled_from_its_page(
    lab: Settings, web: Web, browser: BrowserContext
) -> None:
    DOCS.mkdir(exist_ok=True)
    with Client(lab) as client:
        # Given some history (one finished, one failed) and the jobs page open
        done = client.submit(_trainer("baseline", 3, 0, tags=["demo"]))
        bad = client.submit(JobSpec(name="typo", command=[PY, "-c", "raise ValueError('bad lr')"]))
        client.wait([done.id, bad.id], timeout=60)
        jobs = browser.new_page()
        jobs.goto(web.url + "/jobs")
        jobs.wait_for_selector(f'tr[data-job="{done.id}"]')
        jobs.wait_for_selector("#live.on", timeout=5000)  # its event stream is open
        gpus = browser.new_page()
        gpus.goto(web.url + "/gpus")
        gpus.wait_for_selector(".gpu")
        gpus.wait_for_selector("#live.on", timeout=5000)
        free_before = gpus.locator('.gpu[data-state="free"]').count()

        # When a trainer is submitted (with a secret in its environment)
        spec = _trainer("watched", 6, 1.5, tags=["web"], env={"MY_API_TOKEN": SECRET})
        job = client.submit(spec)
        submitted = time.monotonic()
        # then its row appears within a second, without a reload
        jobs.wait_for_selector(f'tr[data-job="{job.id}"]', timeout=1000)
        appeared = time.monotonic() - submitted
        assert appeared < 1.0

        # and so does a job that must wait (queued at its submit: no status event)
        big = client.submit(JobSpec(name="waits", gpus=4, command=[PY, "-c", "pass"]))
        submitted = time.monotonic()
        jobs.wait_for_selector(f'tr[data-job="{big.id}"] .status-queued', timeout=1000)
        assert time.monotonic() - submitted < 1.0
        client.cancel(big.id)

        # and a GPU's cell turns busy with it
        cell = gpus.locator(f'.gpu[data-state="busy"]:has(a[href="/jobs/{job.id}"])')
        cell.wait_for(timeout=5000)

        # and its progress bar moves as the trainer writes epochs
        seen = [_bar(jobs, job.id)]
        deadline = time.monotonic() + 30
        while len(set(seen)) < 3:
            assert time.monotonic() < deadline, f"the bar stayed at {sorted(set(seen))}"
            jobs.wait_for_timeout(200)
            seen.append(_bar(jobs, job.id))
        assert sorted(set(seen)) == sorted(set(seen), key=seen.index)  # only forward
        jobs.screenshot(path=str(DOCS / "web-jobs.png"), full_page=False)

        # When its page is open
        page = browser.new_page()
        page.goto(f"{web.url}/jobs/{job.id}")
        log = page.locator("#log")
        log.wait_for()
        # then the log's tail shows lines as they are written
        page.wait_for_function(
            "document.querySelector('#log').textContent.includes('epoch ')", timeout=10_000
        )
        first = log.text_content() or ""
        epochs_now = first.count("epoch ")
        page.wait_for_function(
            f"document.querySelector('#log').textContent.split('epoch ').length - 1 > {epochs_now}",
            timeout=10_000,
        )
        # and the loss curve grows with the metrics
        curve = page.locator('#metrics polyline[data-series="train_loss"]')
        curve.wait_for(timeout=10_000)
        points = int(curve.get_attribute("data-points") or 0)
        page.wait_for_function(
            "(n) => { const c = document.querySelector("
            "'#metrics polyline[data-series=\"train_loss\"]');"
            " return c && Number(c.dataset.points) > n; }",
            arg=points,
            timeout=10_000,
        )
        # and no secret value is on the page or in the API
        assert SECRET not in page.content()
        assert SECRET not in web.http.get(f"/api/jobs/{job.id}").text
        page.screenshot(path=str(DOCS / "web-job.png"), full_page=True)

        # When Cancel is pressed and confirmed
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#cancel")
        # then the job stops, and the page and the list say so
        stopped = wait_for_job(client, job.id, lambda j: j.done, 30)
        assert stopped.status is JobStatus.CANCELLED
        page.wait_for_selector('[data-field="status"] .status-cancelled', timeout=5000)
        jobs.wait_for_selector(f'tr[data-job="{job.id}"] .status-cancelled', timeout=5000)
        # and its GPU's cell turns free again
        gpus.wait_for_function(
            f"document.querySelectorAll('.gpu[data-state=\"free\"]').length >= {free_before}",
            timeout=10_000,
        )
        assert gpus.locator(f'.gpu:has(a[href="/jobs/{job.id}"])').count() == 0
        for opened in (jobs, gpus, page):
            opened.close()


@pytest.mark.timeout(60)
def test_the_api_serves_what_the_pages_show(lab: Settings, web: Web) -> None:
    # Given a running job, a job too big to start now, and a summary on disk
    with Client(lab) as client:
        small = client.submit(
            JobSpec(name="holder", command=[PY, "-c", "import time; time.sleep(60)"], timeout=600)
        )
        wait_for_job(client, small.id, lambda j: j.status is JobStatus.RUNNING, 30)
        big = client.submit(JobSpec(name="big", gpus=4, command=[PY, "-c", "pass"]))
        summaries = lab.summaries_dir
        summaries.mkdir(parents=True, exist_ok=True)
        (summaries / "2026-01-02_summary.md").write_text(
            "# Day\n\n| a | b |\n| - | - |\n| 1 | <script>alert(1)</script> |\n\n"
            "![GPU utilisation per node](2026-01-02_gpu.png)\n"
        )
        (summaries / "2026-01-02_gpu.png").write_bytes(b"\x89PNG\r\n\x1a\n")
        try:
            # then the job list filters by status, name and tag
            running = web.http.get("/api/jobs", params={"status": "running"}).json()
            assert small.id in [row["id"] for row in running]
            assert all(row["status"] == "running" for row in running)
            named = web.http.get("/api/jobs", params={"name": "HOLD"}).json()
            assert [row["id"] for row in named] == [small.id]
            assert web.http.get("/api/jobs", params={"tag": "nothing-has-it"}).json() == []
            assert web.http.get("/api/jobs", params={"status": "bogus"}).json() == []
            # and the GPU grid shows it on its GPU
            grid = web.http.get("/api/gpus").json()
            busy = [g for node in grid for g in node["gpus"] if g["job"] == small.id]
            assert len(busy) == 1 and busy[0]["state"] == "busy"
            # and the queue says why the big job waits and what it holds
            queue = web.http.get("/api/queue").json()
            [waiting] = [j for j in queue["waiting"] if j["id"] == big.id]
            assert "waiting for 4 free GPU(s)" in waiting["why"]
            assert [h["node"] for h in waiting["holds"]] == [lab.node_name]
            # and the nodes and one job's page answer
            nodes = web.http.get("/api/nodes").json()
            assert [n["node"] for n in nodes] == [lab.node_name]
            page = web.http.get(f"/api/jobs/{big.id}").json()
            assert page["why_waiting"] and page["job"]["status"] == "queued"
            assert web.http.get("/api/jobs/no-such-job-1234").status_code == 404
            # and a summary is rendered as text, its chart served
            [day] = [s for s in web.http.get("/api/summaries").json() if s["day"] == "2026-01-02"]
            assert "<script>" not in day["html"] and "&lt;script&gt;" in day["html"]
            assert 'src="/summaries/charts/2026-01-02_gpu.png"' in day["html"]
            chart = web.http.get("/summaries/charts/2026-01-02_gpu.png")
            assert chart.status_code == 200 and chart.headers["content-type"] == "image/png"
            assert web.http.get("/summaries").status_code == 200
        finally:
            client.cancel(big.id)
            client.cancel(small.id, grace=1)
            wait_for_job(client, small.id, lambda j: j.done, 30)


@pytest.mark.timeout(60)
def test_events_reach_a_page_and_a_lost_subscription_resyncs(lab: Settings, web: Web) -> None:
    # Given a page's event stream
    with (
        httpx.Client(base_url=web.url, auth=web.http.auth, timeout=20) as http,
        http.stream("GET", "/events") as stream,
    ):
        events = sse_events(stream.iter_lines())
        assert next(events)[0] == "hello"
        # When the server's subscription is cut (as a Redis restart cuts it)
        server = redis.Redis.from_url(lab.effective_redis_url)
        killed = server.client_kill_filter(_type="pubsub")
        assert killed >= 1
        # then the page is told to read its data afresh once it is back
        kinds = set()
        deadline = time.monotonic() + 15
        while "resync" not in kinds:
            assert time.monotonic() < deadline, kinds
            kinds.add(next(events)[0])
        # and events flow again
        with Client(lab) as client:
            job = client.submit(JobSpec(name="after-cut", command=[PY, "-c", "pass"]))
        deadline = time.monotonic() + 15
        while True:
            assert time.monotonic() < deadline
            kind, data = next(events)
            if kind == "jobs" and any(row["id"] == job.id for row in data):
                break
        server.publish(Keys(lab.redis_prefix).events_channel, "not-a-job-id queued")
        server.close()
