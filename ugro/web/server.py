"""Serving the dashboard with uvicorn, in the foreground, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import uvicorn

from ugro.errors import StackError
from ugro.settings import Settings
from ugro.web.app import make_app
from ugro.web.auth import WebLogin


def serve(
    settings: Settings, login: WebLogin, on_ready: Callable[[str], None] | None = None
) -> None:
    """Serve on ``settings.web_address``:``settings.web_port``.

    Raises:
        NotRunningError: Redis does not answer.
        StackError: the address cannot be bound.
    """
    from ugro.live.connection import connect

    connect(settings).close()  # fail now, with a hint, rather than retry forever
    host, port = settings.web_address, settings.web_port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StackError(
            f"the dashboard cannot listen on {host}:{port} ({exc.strerror}):"
            " choose another with UGRO_WEB_PORT or --port"
        ) from None
    config = uvicorn.Config(
        make_app(settings, login),
        log_level="warning",
        access_log=False,  # one line per request would drown the log
        # The event streams end when the server stops: a page reconnects by itself.
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    if on_ready is not None:
        where = f"[{host}]" if ":" in host else host
        on_ready(f"http://{where}:{sock.getsockname()[1]}/")
    asyncio.run(server.serve(sockets=[sock]))
