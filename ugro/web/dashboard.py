"""The dashboard's state, shared by its routes: the client it reads through, the
progress cache, the live feed and the login; and what turns ugro's errors into
HTTP answers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from ugro.client import Client
from ugro.errors import JobNotFound, NotRunningError, SpecError, StateError
from ugro.web.auth import WebLogin
from ugro.web.job_rows import ProgressCache
from ugro.web.live import LiveFeed

_T = TypeVar("_T")


@dataclass
class Dashboard:
    client: Client
    cache: ProgressCache
    feed: LiveFeed
    login: WebLogin

    async def read(self, work: Callable[..., _T], *args: Any) -> _T:
        """Run a blocking read (registry, Redis, files) off the event loop."""
        return await run_in_threadpool(work, *args)


def dashboard_of(request: Request) -> Dashboard:
    found: Dashboard = request.app.state.dashboard
    return found


class Refused(Exception):
    """An answer other than 200, with what to say."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def refusal(exc: Exception) -> Refused | None:
    """The HTTP answer to one of ugro's errors (None: not one it answers)."""
    if isinstance(exc, Refused):
        return exc
    if isinstance(exc, JobNotFound):
        return Refused(404, str(exc))
    if isinstance(exc, SpecError | ValueError):
        return Refused(400, str(exc))
    if isinstance(exc, StateError):
        return Refused(409, str(exc))
    if isinstance(exc, NotRunningError | redis.RedisError | ConnectionError):
        return Refused(503, f"Redis is not reachable now ({exc}); the page retries")
    return None


def error_json(exc: Refused) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=exc.status)
