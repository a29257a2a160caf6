"""The dashboard's HTML pages: each a server-rendered frame (navigation, filters,
the CSRF token) carrying its first data as JSON, which the scripts of
``static/`` draw and keep current from the event stream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from ugro.jobs.lifecycle import JobStatus
from ugro.web.api import DEFAULT_LIMIT, job_id_of
from ugro.web.cluster_rows import gpu_grid, node_rows, queue_rows
from ugro.web.dashboard import Refused, dashboard_of, refusal
from ugro.web.job_rows import FILTERS, JobFilter, job_page, list_rows
from ugro.web.summary_pages import chart_path, summaries

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
#: The navigation: (path, title).
NAV = [
    ("/jobs", "Jobs"),
    ("/gpus", "GPUs"),
    ("/nodes", "Nodes"),
    ("/queue", "Queue"),
    ("/summaries", "Summaries"),
]


def _render(
    request: Request,
    page: str,
    title: str,
    data: Any,
    status: int = 200,
    notice: str | None = None,
) -> Response:
    board = dashboard_of(request)
    context = {
        "page": page,
        "title": title,
        "data": data,
        "nav": NAV,
        "csrf": board.login.csrf_token,
        "filters": {key: request.query_params.get(key, "") for key in FILTERS},
        "statuses": [status.value for status in JobStatus],
        "notice": notice,
    }
    return TEMPLATES.TemplateResponse(
        request, "page.html", context, status_code=status, headers={"cache-control": "no-store"}
    )


async def _page(
    request: Request, page: str, title: str, work: Any, *args: Any, empty: Any = None
) -> Response:
    """A page with its data; with ``empty``, a page that needs Redis shows that while
    Redis is away, says so, and fills in once the live feed is back."""
    try:
        data = await dashboard_of(request).read(work, *args)
    except Exception as exc:
        refused = refusal(exc)
        if refused is None:
            raise
        if refused.status == 503 and empty is not None:
            return _render(request, page, title, empty, notice=refused.message)
        return _render(request, "error", f"{refused.status}", refused.message, refused.status)
    return _render(request, page, title, data)


async def home(_request: Request) -> Response:
    return RedirectResponse("/jobs", status_code=303)


async def jobs_page(request: Request) -> Response:
    board = dashboard_of(request)
    wanted = JobFilter.of(dict(request.query_params))
    return await _page(
        request, "jobs", "Jobs", list_rows, board.client, wanted, board.cache, DEFAULT_LIMIT
    )


async def job_detail_page(request: Request) -> Response:
    board = dashboard_of(request)
    job_id = str(request.path_params["job_id"])
    return await _page(
        request,
        "job",
        f"Job {job_id[:64]}",
        lambda: job_page(board.client, job_id_of(request), board.cache),
    )


async def gpus_page(request: Request) -> Response:
    board = dashboard_of(request)
    return await _page(request, "gpus", "GPUs", gpu_grid, board.client, board.cache, empty=[])


async def nodes_page(request: Request) -> Response:
    client = dashboard_of(request).client
    return await _page(request, "nodes", "Nodes", node_rows, client, empty=[])


async def queue_page(request: Request) -> Response:
    client = dashboard_of(request).client
    empty: dict[str, list[Any]] = {"waiting": [], "backoff": [], "held": []}
    return await _page(request, "queue", "Queue", queue_rows, client, empty=empty)


async def summaries_page(request: Request) -> Response:
    settings = dashboard_of(request).client.settings
    return await _page(request, "summaries", "Daily summaries", summaries, settings)


async def summary_chart(request: Request) -> Response:
    settings = dashboard_of(request).client.settings
    path = chart_path(settings, str(request.path_params["name"]))
    if path is None:
        error = Refused(404, "no such chart")
        return _render(request, "error", "404", error.message, error.status)
    return FileResponse(path, media_type="image/png")


def page_routes() -> list[Route]:
    return [
        Route("/", home),
        Route("/jobs", jobs_page),
        Route("/jobs/{job_id}", job_detail_page),
        Route("/gpus", gpus_page),
        Route("/nodes", nodes_page),
        Route("/queue", queue_page),
        Route("/summaries", summaries_page),
        Route("/summaries/charts/{name}", summary_chart),
    ]
