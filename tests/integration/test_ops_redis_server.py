"""The embedded Redis: private, durable, never evicting; an external one when asked."""

from __future__ import annotations

import os
import stat
import sys

import pytest
import redis

from tests.conftest import ROOT, env_for, processes_of, ugro
from ugro import Client, JobSpec
from ugro.live.state import LiveState
from ugro.ops.redis_server import EmbeddedRedis
from ugro.settings import Settings


def test_it_listens_only_on_a_private_socket_keeps_an_aof_and_never_evicts(
    embedded_settings: Settings, redis_server: EmbeddedRedis
) -> None:
    settings = embedded_settings
    client = redis_server.client()
    config = {
        key: client.config_get(key)[key]
        for key in ("port", "appendonly", "maxmemory-policy", "maxmemory", "unixsocketperm")
    }
    assert config == {
        "port": "0",
        "appendonly": "yes",
        "maxmemory-policy": "noeviction",
        "maxmemory": "0",
        "unixsocketperm": "700",
    }
    assert stat.S_IMODE(os.stat(settings.redis_socket).st_mode) == 0o700


def test_a_queued_job_survives_a_restart(
    embedded_settings: Settings, redis_server: EmbeddedRedis
) -> None:
    settings = embedded_settings
    with Client(settings) as client:
        job = client.submit(JobSpec(name="waits", command=["true"]))
    redis_server.stop()
    assert not redis_server.is_running()
    redis_server.start()
    live = LiveState.open(settings)
    assert [pending[0] for pending in live.pending()] == [job.id]


def test_a_long_data_dir_still_gets_a_socket(tmp_path: object, database_url: str) -> None:
    deep = os.path.join(str(tmp_path), "d" * 60, "e" * 60)
    settings = Settings(data_dir=deep, database_url=database_url)
    server = EmbeddedRedis(settings)
    server.start()
    try:
        assert len(str(settings.redis_socket)) <= 100
        assert LiveState.open(settings).redis.ping()
    finally:
        server.stop()


def _external_redis_url() -> str | None:
    url = os.environ.get("UGRO_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        return None
    return url


@pytest.mark.timeout(120)
def test_with_a_redis_url_nothing_is_started_and_keys_carry_the_prefix(
    settings: Settings, tmp_path: object
) -> None:
    # Given a Redis server of the lab's (the shared one here, else one of our own)
    url = _external_redis_url()
    other = None
    if url is None:
        other = EmbeddedRedis(Settings(data_dir=os.path.join(str(tmp_path), "lab-redis")))
        other.start()
        url = f"unix://{other.socket}"
    prefix = f"ugrotest{os.getpid()}"
    lab = settings.model_copy(update={"redis_url": url, "redis_prefix": prefix})
    env = env_for(lab) | {"UGRO_REDIS_URL": url, "UGRO_REDIS_PREFIX": prefix}
    server = redis.Redis.from_url(url)
    try:
        up = ugro(lab, "up", "--gpus", "0,1", env=env)
        assert up.returncode == 0, up.stderr
        assert not lab.redis_dir.exists()  # no embedded server was started
        submit = ugro(
            lab,
            "submit",
            "--name",
            "on-lab-redis",
            "--",
            sys.executable,
            "-c",
            "print('hi')",
            env=env,
            cwd=ROOT,
        )
        assert submit.returncode == 0, submit.stderr
        assert ugro(lab, "wait", submit.stdout.strip(), env=env).returncode == 0
        keys = [key.decode() for key in server.keys(f"*{prefix}*")]
        assert keys and all(key.startswith(f"{prefix}:") for key in keys), keys
    finally:
        assert ugro(lab, "down", env=env).returncode == 0
        assert processes_of(lab) == []
        for key in server.scan_iter(f"{prefix}:*"):
            server.delete(key)
        if other is not None:
            other.stop()
