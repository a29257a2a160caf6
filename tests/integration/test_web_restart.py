"""The dashboard rides out a Redis restart: the pages are told, the job list keeps
answering from the registry, and once Redis is back every page is told to read
afresh and the live parts answer again."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.web_load import LOGIN, fill_registry, sse_events, web_server
from ugro.ops.redis_server import EmbeddedRedis
from ugro.settings import Settings


def _wait_for(events: Iterator[tuple[str, Any]], kind: str, data: Any = None) -> None:
    for got, payload in events:
        if got == kind and (data is None or payload == data):
            return
    raise AssertionError(f"the stream ended before a {kind} event")


@pytest.mark.timeout(90)
def test_the_dashboard_rides_out_a_redis_restart(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", redis_url=None, database_url=None)
    ids = fill_registry(settings, 5)
    server = EmbeddedRedis(settings)
    server.start()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    try:
        with (
            web_server(settings, port, tmp_path / "web.log"),
            httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=LOGIN, timeout=30) as http,
            http.stream("GET", "/events") as stream,
        ):
            events = sse_events(stream.iter_lines())
            _wait_for(events, "hello")
            assert http.get("/api/gpus").status_code == 200
            # When Redis stops
            server.stop()
            # then the pages are told, the job list still answers and the GPUs do not
            _wait_for(events, "redis", {"up": False})
            assert [row["id"] for row in http.get("/api/jobs").json()] == sorted(ids)[::-1]
            assert http.get("/api/gpus").status_code == 503
            assert "not reachable" in http.get("/gpus").text
            # When it is back, then every page is told to read afresh, and it answers
            server.start()
            _wait_for(events, "resync")
            assert http.get("/api/gpus").status_code == 200
            assert http.get("/api/queue").json()["waiting"] == []
    finally:
        server.stop()
