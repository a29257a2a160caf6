"""A Redis with a password, as the deployment docs set it up: a wrong or missing
password is said at once (exit 3), never a hang, and the password is printed
nowhere."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ugro
from tests.hosts import _free_port, _wait_for_port
from ugro.ops.redis_server import redis_executable
from ugro.settings import Settings


@pytest.fixture
def guarded_redis(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """A Redis server of the test's own on loopback with a password: (port, password)."""
    password = secrets.token_hex(12)
    port = _free_port("127.0.0.1")
    conf = tmp_path / "redis.conf"
    conf.write_text(
        f"bind 127.0.0.1\nport {port}\nrequirepass {password}\n"
        f'save ""\nappendonly no\ndir {tmp_path}\n'
    )
    conf.chmod(0o600)
    server = subprocess.Popen([redis_executable(), str(conf)], stdout=subprocess.DEVNULL)
    try:
        _wait_for_port("127.0.0.1", port, server)
        yield port, password
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.timeout(60)
def test_a_wrong_or_missing_password_is_said_at_once_and_never_shown(
    settings: Settings, guarded_redis: tuple[int, str]
) -> None:
    port, password = guarded_redis
    wrong = secrets.token_hex(12)
    for given, said in (
        (wrong, "refused the password"),
        (None, "wants a password"),
    ):
        auth = f":{given}@" if given else ""
        url = f"redis://{auth}127.0.0.1:{port}/0"
        mine = settings.model_copy(update={"redis_url": url, "redis_prefix": "ugropw"})
        for command in (["submit", "--name", "t", "--", "true"], ["worker"], ["beat"]):
            began = time.monotonic()
            result = ugro(mine, *command, timeout=30)
            # Then the command ends at once with a clear error, exit 3
            assert result.returncode == 3, (command, result.stderr)
            assert said in result.stderr, (command, result.stderr)
            assert time.monotonic() - began < 15
            # and neither password is shown
            for secret in (wrong, password):
                assert secret not in result.stdout + result.stderr
            if given:
                assert f"redis://:***@127.0.0.1:{port}/0" in result.stderr
    # Nothing was made: no job's tree
    assert not (settings.jobs_dir).exists() or not any(settings.jobs_dir.iterdir())
