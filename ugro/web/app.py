"""The dashboard's ASGI app (Starlette): its routes, the login in front of all of
them, and the live feed started and stopped with it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from ugro.client import Client
from ugro.settings import Settings
from ugro.web.api import api_routes
from ugro.web.auth import RequireLogin, WebLogin
from ugro.web.dashboard import Dashboard
from ugro.web.job_rows import ProgressCache
from ugro.web.live import LiveFeed
from ugro.web.pages import page_routes

STATIC = Path(__file__).parent / "static"


def make_app(settings: Settings, login: WebLogin) -> Starlette:
    """The dashboard of the installation ``settings`` names, asking for ``login``.

    It reads through a client that reaches Redis when it needs it, so the job
    pages answer while Redis is away (those that need it say so)."""
    client = Client(settings, connect=False)
    cache = ProgressCache()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        feed = LiveFeed(client, cache)
        app.state.dashboard = Dashboard(client, cache, feed, login)
        feed.start()
        try:
            yield
        finally:
            await feed.stop()
            client.close()

    routes = [*page_routes(), *api_routes(), Mount("/static", StaticFiles(directory=STATIC))]
    return Starlette(
        routes=routes, middleware=[Middleware(RequireLogin, login=login)], lifespan=lifespan
    )
