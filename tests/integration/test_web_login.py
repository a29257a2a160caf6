"""The dashboard's login (Flower's scheme under its own names) and its start
without Redis."""

from __future__ import annotations

import os
import socket
import stat

import pytest

from tests.conftest import ugro
from ugro.errors import SpecError, StackError
from ugro.settings import Settings
from ugro.web.auth import action_allowed, auth_file, web_login


def test_a_generated_login_is_written_once_with_mode_0600(settings: Settings) -> None:
    first = web_login(settings)
    second = web_login(settings)
    assert first.generated and not second.generated
    assert first.credential == second.credential
    assert first.user == "ugro" and len(first.password) >= 20
    assert stat.S_IMODE(auth_file(settings).stat().st_mode) == 0o600


def test_a_configured_login_wins_and_a_malformed_one_is_refused(settings: Settings) -> None:
    configured = settings.model_copy(update={"web_basic_auth": "alice:s3cret:with-colon"})
    login = web_login(configured)
    assert (login.user, login.password, login.generated) == ("alice", "s3cret:with-colon", False)
    assert not auth_file(settings).exists()
    for bad in ("alice", "alice:", ":pw"):
        with pytest.raises(SpecError, match="UGRO_WEB_BASIC_AUTH"):
            web_login(settings.model_copy(update={"web_basic_auth": bad}))


def test_a_login_file_others_can_read_is_refused(settings: Settings) -> None:
    web_login(settings)
    os.chmod(auth_file(settings), 0o644)
    with pytest.raises(StackError, match="chmod 600"):
        web_login(settings)


def test_the_csrf_token_follows_the_login_and_the_origin_must_be_the_dashboard(
    settings: Settings,
) -> None:
    alice = web_login(settings.model_copy(update={"web_basic_auth": "alice:one"}))
    other = web_login(settings.model_copy(update={"web_basic_auth": "alice:two"}))
    assert alice.csrf_token != other.csrf_token
    host = "127.0.0.1:8265"
    assert action_allowed(alice, alice.csrf_token, None, host)
    assert action_allowed(alice, alice.csrf_token, f"http://{host}", host)
    assert not action_allowed(alice, other.csrf_token, None, host)
    assert not action_allowed(alice, None, None, host)
    assert not action_allowed(alice, alice.csrf_token, "http://127.0.0.1:9999", host)
    assert not action_allowed(alice, alice.csrf_token, "null", host)


def test_the_dashboard_refuses_to_start_when_redis_is_down(embedded_settings: Settings) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = ugro(embedded_settings, "web", "--port", str(port), timeout=30)
    assert result.returncode == 3, result.stderr
    assert "start it with `ugro up`" in result.stderr
