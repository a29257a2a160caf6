"""Fixtures: real Redis, a real registry (PostgreSQL when it runs here, else SQLite),
and a real local stack of worker processes on simulated GPUs."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from ugro.client import Client
from ugro.job import Job
from ugro.live.events import next_event
from ugro.ops.redis_server import EmbeddedRedis
from ugro.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PG_DSN = os.environ.get(
    "UGRO_TEST_POSTGRES", "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=2"
)


def _postgres_available() -> bool:
    try:
        import psycopg

        psycopg.connect(PG_DSN).close()
        return True
    except Exception:
        return False


POSTGRES = _postgres_available()
#: A Redis server to test against instead of the embedded one; each test then
#: writes only under a key prefix of its own and deletes it afterwards.
TEST_REDIS_URL = os.environ.get("UGRO_TEST_REDIS_URL") or None


@contextlib.contextmanager
def registry_database(directory: Path) -> Iterator[str]:
    """A fresh registry database: a private schema on the PostgreSQL server when one
    answers, else SQLite in ``directory``."""
    if not POSTGRES:
        yield f"sqlite:///{directory / 'registry.sqlite3'}"
        return
    import psycopg

    schema = f"ugro_test_{secrets.token_hex(6)}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    params = dict(part.split("=", 1) for part in PG_DSN.split())
    try:
        yield (
            f"postgresql+psycopg://{params['user']}@{params['host']}:{params['port']}"
            f"/{params['dbname']}?options=-csearch_path%3D{schema}"
        )
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    with registry_database(tmp_path) as url:
        yield url


def make_settings(data_dir: Path, database_url: str, **changes: Any) -> Settings:
    """Settings for a test: its own data dir and registry, 4 fake GPUs, short timings."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "redis_url": TEST_REDIS_URL,
        "redis_prefix": f"ugrotest-{secrets.token_hex(4)}" if TEST_REDIS_URL else "ugro",
        "gpu_backend": "fake:4",
        "node_name": "testnode",
        "heartbeat_interval": 0.5,
        "lease_ttl": 5.0,
        "worker_ttl": 3.0,
        "stop_grace": 2.0,
        "dispatch_interval": 5.0,
        "reconcile_interval": 2.0,
        "orphan_scan_interval": 1.0,
        "retry_backoff": 0.5,
        "retry_backoff_max": 2.0,
    }
    values.update(changes)
    return Settings(**values)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path / "data", database_url)


@pytest.fixture
def client(lab: Settings) -> Iterator[Client]:
    """A client of the module's shared stack (a module that asks for it has a
    ``lab`` fixture: its stack, made once for the module)."""
    with Client(lab) as c:
        yield c


@pytest.fixture
def embedded_settings(settings: Settings) -> Settings:
    """The test's settings on the embedded Redis, whatever UGRO_TEST_REDIS_URL says."""
    return settings.model_copy(update={"redis_url": None, "redis_prefix": "ugro"})


@pytest.fixture
def redis_server(embedded_settings: Settings) -> Iterator[EmbeddedRedis]:
    """The embedded Redis of the test's data dir, running."""
    server = EmbeddedRedis(embedded_settings)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def live_redis(settings: Settings) -> Iterator[redis.Redis]:
    """The Redis server the test's settings use, running; the test's keys go after."""
    server = EmbeddedRedis(settings) if settings.embedded_redis else None
    if server is not None:
        server.start()
    client = redis.Redis.from_url(settings.effective_redis_url, decode_responses=True)
    yield client
    drop_keys(settings)
    client.close()
    if server is not None:
        server.stop()


def drop_keys(settings: Settings) -> None:
    """Delete every key of the test's prefix from a shared Redis server."""
    if settings.embedded_redis:
        return
    client = redis.Redis.from_url(settings.effective_redis_url)
    for key in client.scan_iter(f"{settings.redis_prefix}:*", count=1000):
        client.delete(key)
    client.close()


def env_for(settings: Settings) -> dict[str, str]:
    """The environment a user's shell would have for these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UGRO_")}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"UGRO_{name.upper()}"] = str(value)
    env["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    return env


def ugro(
    settings: Settings,
    *args: str,
    timeout: float = 120,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the `ugro` command as a user would."""
    return subprocess.run(
        [str(BIN / "ugro"), *args],
        env=env or env_for(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or ROOT,
    )


def processes_of(settings: Settings) -> list[psutil.Process]:
    """Every process still running for this data dir (workers, beat, Redis, jobs)."""
    found = []
    marker = str(settings.data_dir)
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            environ = proc.info["environ"] or {}
        except psutil.Error:
            continue
        ours = marker in cmdline or environ.get("UGRO_DATA_DIR") == marker
        if ours and proc.pid != os.getpid():
            found.append(proc)
    return found


@contextlib.contextmanager
def running_stack(settings: Settings, *up_args: str) -> Iterator[Settings]:
    """`ugro up` with these settings; `ugro down` after, which must leave no process."""
    result = ugro(settings, "up", *up_args)
    assert result.returncode == 0, result.stderr + _logs(settings)
    try:
        yield settings
    finally:
        down = ugro(settings, "down")
        left = processes_of(settings)
        for proc in left:
            proc.kill()
        drop_keys(settings)
        assert down.returncode == 0, down.stderr
        assert not left, f"processes left after `ugro down`: {[p.cmdline() for p in left]}"


@pytest.fixture
def stack(settings: Settings) -> Iterator[Settings]:
    """`ugro up` in the test's data dir (embedded Redis, 4 GPU workers, agent, beat)."""
    with running_stack(settings) as running:
        yield running


def _logs(settings: Settings) -> str:
    text = []
    for path in sorted(settings.run_dir.glob("*.log")):
        text.append(f"--- {path.name}\n" + path.read_text(errors="replace")[-3000:])
    return "\n".join(text)


def wait_for_job(client: Client, job_id: str, check: Callable[[Job], bool], timeout: float) -> Job:
    """Wait on the workers' status events until ``check`` holds for the job."""
    pubsub = client.rt.live.subscribe()
    deadline = time.monotonic() + timeout
    try:
        while not check(job := client.get(job_id)):
            assert time.monotonic() < deadline, f"{job_id}: still {job.status.value}"
            next_event(pubsub, 0.5)
        return job
    finally:
        pubsub.close()


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str = "condition",
    report: Callable[[], str] | None = None,
) -> None:
    """Poll for what no event announces (a file a job writes, a process's end);
    on a timeout, ``report`` says what the parts involved were doing."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            details = f"\n{report()}" if report is not None else ""
            raise AssertionError(f"timed out waiting for {what}{details}")
        time.sleep(0.05)
