"""Who may use the web dashboard, and the checks every request passes.

The login is Flower's scheme under the dashboard's own names: HTTP basic auth from
``UGRO_WEB_BASIC_AUTH`` (``user:password``), or, when that is unset, a password
generated once into ``<data_dir>/web-auth`` (mode 0600; a file others can read is
refused). Every path asks for it, the static files included: the pages name
jobs, users and nodes.

A browser sends basic credentials with any request to the site, a forged one
from another site's page too, so an action that changes something (cancel, retry)
also needs a header that only the dashboard's own pages can send: the CSRF token
they carry (an HMAC of the password, so it changes with it), in ``X-CSRF-Token``.
A cross-site page cannot set a custom header without a CORS preflight, which the
dashboard never grants; an ``Origin`` that is not the dashboard's is refused too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from ugro.logins import Login, login_from
from ugro.settings import Settings

AUTH_FILE_NAME = "web-auth"
SETTING = "UGRO_WEB_BASIC_AUTH"
CSRF_HEADER = "x-csrf-token"
_REALM = b'Basic realm="ugro", charset="UTF-8"'


@dataclass(frozen=True)
class WebLogin(Login):
    """Who may log in to the dashboard (``ugro.logins``), and what its pages send."""

    @property
    def csrf_token(self) -> str:
        """The token the dashboard's pages send with an action."""
        key = hashlib.sha256(b"ugro-web-csrf:" + self.credential.encode()).digest()
        return hmac.new(key, b"actions", hashlib.sha256).hexdigest()

    def accepts(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header carries this login (compared in
        constant time)."""
        if not authorization or not authorization.lower().startswith("basic "):
            return False
        try:
            given = base64.b64decode(authorization[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(given, self.credential.encode())


def auth_file(settings: Settings) -> Path:
    return settings.data_dir / AUTH_FILE_NAME


def web_login(settings: Settings) -> WebLogin:
    """The login the dashboard requires: ``UGRO_WEB_BASIC_AUTH``, else the generated one.

    Raises:
        SpecError: ``UGRO_WEB_BASIC_AUTH`` is not ``user:password``.
        StackError: the generated file is readable by others or unreadable.
    """
    return login_from(WebLogin, settings.web_basic_auth, SETTING, auth_file(settings))


class RequireLogin:
    """ASGI middleware: a request without the login gets 401 and a basic-auth
    challenge, before any route runs."""

    def __init__(self, app: ASGIApp, login: WebLogin) -> None:
        self.app = app
        self.login = login

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        if self.login.accepts(authorization):
            await self.app(scope, receive, send)
            return
        body = b"login required\n"
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"www-authenticate", _REALM),
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def same_origin(origin: str | None, host: str | None) -> bool:
    """Whether a request's ``Origin`` (absent: not a cross-site fetch) is the
    dashboard's own ``Host``."""
    if origin is None:
        return True
    if host is None:
        return False
    scheme_sep = origin.find("://")
    return scheme_sep >= 0 and origin[scheme_sep + 3 :] == host


def action_allowed(
    login: WebLogin, token: str | None, origin: str | None, host: str | None
) -> bool:
    """Whether a state-changing request came from one of the dashboard's pages."""
    if token is None or not hmac.compare_digest(token, login.csrf_token):
        return False
    return same_origin(origin, host)
