"""`python -m bench.web_load`: the web dashboard under many open pages, on loopback.

It makes a data dir with ``--jobs`` finished jobs in the registry (written there
directly: no worker runs), starts the embedded Redis and `ugro web` as a user
would, then opens ``--clients`` pages' worth of connections: each loads the job
list (every row) and keeps the event stream open, as an open jobs page does.
Then it measures:

- the server's CPU while idle, over ``--idle`` seconds (psutil, the server
  process and its threads), as a percentage of one core;
- the latency of an event: from the status event's PUBLISH on Redis to the moment
  the last of the clients has it (a job row read from the registry and sent to
  every page), ``--events`` times, one at a time.

Everything stays on this machine: the clients speak to 127.0.0.1 only, and every
loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import redis

from ugro.jobs.spec import JobSpec
from ugro.live.keys import Keys
from ugro.ops.redis_server import EmbeddedRedis
from ugro.registry.store import Registry
from ugro.settings import Settings

UGRO = str(Path(sys.executable).parent / "ugro")
LOGIN = ("bench", "bench-password")
#: Seconds any one step may take before the run gives up.
_STEP_TIMEOUT = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fill_registry(settings: Settings, jobs: int) -> list[str]:
    """``jobs`` finished jobs with a progress record each, as the list shows them."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    registry = Registry(settings.effective_database_url)
    start = datetime.now(UTC) - timedelta(days=1)
    rows = []
    for i in range(jobs):
        spec = JobSpec(name=f"load-{i}", command=["python", "train.py"], epochs=10, tags=["load"])
        progress = {"status": "finished", "completed_epochs": 10, "total_epochs": 10}
        progress |= {"percent": 100.0, "complete": True, "best_score": 0.8, "latest_score": 0.79}
        rows.append(
            {
                "id": f"load-{i:05d}-bench",
                "name": spec.name,
                "kind": spec.kind,
                "status": "finished",
                "priority": 0,
                "gpus": 1,
                "node": "node-a",
                "gpu_indices": json.dumps([i % 8]),
                "attempt": 1,
                "max_retries": 0,
                "spec": spec.model_dump_json(),
                "created_at": start + timedelta(seconds=i),
                "started_at": start + timedelta(seconds=i + 1),
                "finished_at": start + timedelta(seconds=i + 60),
                "exit_code": 0,
                "exit_reason": "ok",
                "progress": json.dumps(progress),
                "user": "bench",
            }
        )
    registry.create_jobs(rows)
    registry.close()
    return [row["id"] for row in rows]


@contextmanager
def web_server(settings: Settings, port: int, log: Path) -> Iterator[psutil.Process]:
    """`ugro web` on ``port`` until the block ends."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UGRO_")}
    env |= {
        "UGRO_DATA_DIR": str(settings.data_dir),
        "UGRO_GPU_BACKEND": "fake:4",
        "UGRO_WEB_BASIC_AUTH": ":".join(LOGIN),
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [UGRO, "web", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + _STEP_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"`ugro web` stopped: {log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("`ugro web` did not answer") from None
                time.sleep(0.1)
        yield psutil.Process(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Page:
    """One open jobs page: the job list loaded once, the event stream kept open."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.auth = base64.b64encode(":".join(LOGIN).encode()).decode()
        self.seen: asyncio.Queue[tuple[float, list[str]]] = asyncio.Queue()
        self.rows = 0
        self._reader: asyncio.StreamReader | None = None

    async def _get(
        self, path: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, dict[str, str]]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Authorization: Basic {self.auth}\r\nAccept: */*\r\n\r\n"
        )
        writer.write(request.encode())
        await writer.drain()
        status = await reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"GET {path}: {status!r}")
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return reader, writer, headers

    async def open(self) -> None:
        reader, writer, headers = await self._get("/api/jobs")
        body = await reader.readexactly(int(headers["content-length"]))
        writer.close()
        self.rows = len(json.loads(body))
        self._reader, self._writer, _ = await self._get("/events")

    async def listen(self) -> None:
        """Note each ``jobs`` event's arrival time and the ids it carries."""
        assert self._reader is not None
        kind = ""
        while True:
            line = await self._reader.readline()
            if not line:
                return
            text = line.decode().strip()
            if text.startswith("event: "):
                kind = text[7:]
            elif text.startswith("data: ") and kind == "jobs":
                ids = [row["id"] for row in json.loads(text[6:])]
                self.seen.put_nowait((time.perf_counter(), ids))

    def close(self) -> None:
        self._writer.close()


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """The (event, JSON data) of a server-sent event stream's lines, in order."""
    kind, data = "message", ""
    for line in lines:
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and data:
            yield kind, json.loads(data)
            kind, data = "message", ""


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


async def measure(
    port: int, server: psutil.Process, settings: Settings, ids: list[str], args: Any
) -> dict[str, Any]:
    pages = [Page(port) for _ in range(args.clients)]
    for page in pages:  # one after another, as people open them
        await asyncio.wait_for(page.open(), _STEP_TIMEOUT)
    listeners = [asyncio.create_task(page.listen()) for page in pages]
    await asyncio.sleep(2.0)  # let the opening settle
    before, started = cpu_seconds(server), time.perf_counter()
    await asyncio.sleep(args.idle)
    idle_cpu = (cpu_seconds(server) - before) / (time.perf_counter() - started) * 100
    publisher = redis.Redis.from_url(settings.effective_redis_url)
    channel = Keys(settings.redis_prefix).events_channel
    latencies = []
    for n in range(args.events):
        job_id = ids[n % len(ids)]
        sent = time.perf_counter()
        publisher.publish(channel, f"{job_id} finished")
        last = sent
        for page in pages:
            while True:
                at, got = await asyncio.wait_for(page.seen.get(), _STEP_TIMEOUT)
                if job_id in got:
                    last = max(last, at)
                    break
        latencies.append((last - sent) * 1000)
        await asyncio.sleep(0.2)
    publisher.close()
    for task in listeners:
        task.cancel()
    for page in pages:
        page.close()
    return {
        "jobs": len(ids),
        "clients": args.clients,
        "rows_per_page": pages[0].rows,
        "idle_seconds": args.idle,
        "idle_cpu_percent": round(idle_cpu, 2),
        "events": args.events,
        "latency_ms_median": round(statistics.median(latencies), 1),
        "latency_ms_max": round(max(latencies), 1),
        "server_rss_mb": round(server.memory_info().rss / 2**20, 1),
    }


def run(args: Any) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="ugro-web-load-"))
    try:
        settings = Settings(
            data_dir=root / "data", gpu_backend="fake:4", redis_url=None, database_url=None
        )
        ids = fill_registry(settings, args.jobs)
        redis_server = EmbeddedRedis(settings)
        redis_server.start()
        try:
            port = _free_port()
            with web_server(settings, port, root / "web.log") as server:
                return asyncio.run(measure(port, server, settings, ids, args))
        finally:
            redis_server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle measured")
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{result['clients']} pages open, {result['jobs']} jobs ({result['rows_per_page']} rows"
        f" each): server idle CPU {result['idle_cpu_percent']:.2f} % of a core over"
        f" {result['idle_seconds']:g} s; an event to the last page: median"
        f" {result['latency_ms_median']} ms, max {result['latency_ms_max']} ms"
        f" ({result['events']} events); server RSS {result['server_rss_mb']} MB"
    )


if __name__ == "__main__":
    main()
