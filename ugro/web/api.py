"""The read-only JSON API under ``/api/`` (what the pages show, for scripts), the
actions the pages' buttons take (cancel, retry: POST, with the CSRF token) and
the event streams the pages follow.

    GET /api/jobs[?status=&user=&tag=&node=&name=&array=&limit=]   the job list
    GET /api/jobs/<id>                  one job: spec, attempts, members, why it waits
    GET /api/jobs/<id>/log[?rank=&node=&attempt=]   the tail of a log (text)
    GET /api/jobs/<id>/metrics          its metrics.jsonl records
    GET /api/gpus                       every node's GPUs
    GET /api/nodes[?hours=]             every node's health, breaker and samples
    GET /api/queue                      waiting jobs in placement order, with why
    GET /api/summaries                  the daily summaries, newest first
    GET /api/summaries/<day>            one day's (Markdown and HTML)
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ugro.jobs.spec import check_job_id
from ugro.web.auth import CSRF_HEADER, action_allowed
from ugro.web.cluster_rows import gpu_grid, node_rows, queue_rows
from ugro.web.dashboard import Refused, dashboard_of, error_json, refusal
from ugro.web.job_files import LogRequest, follow_job, job_files, read_log_tail, read_metrics
from ugro.web.job_rows import JobFilter, job_page, list_rows
from ugro.web.summary_pages import render_summary, summaries, summary_markdown

#: Rows the job list returns unless asked for fewer or more.
DEFAULT_LIMIT = 5000
_MAX_LIMIT = 50_000
_NO_CACHE = {"cache-control": "no-store"}
_STREAM_HEADERS = {**_NO_CACHE, "x-accel-buffering": "no"}


def job_id_of(request: Request) -> str:
    """The path's job id, refused unless it is a safe path component."""
    job_id = str(request.path_params["job_id"])
    check_job_id(job_id)
    return job_id


def _limit(request: Request) -> int:
    value = request.query_params.get("limit")
    if value is None:
        return DEFAULT_LIMIT
    limit = int(value)
    if not 1 <= limit <= _MAX_LIMIT:
        raise Refused(400, f"limit: 1 to {_MAX_LIMIT}")
    return limit


async def _answer(request: Request, work: Any, *args: Any) -> Response:
    try:
        return JSONResponse(await dashboard_of(request).read(work, *args), headers=_NO_CACHE)
    except Exception as exc:
        refused = refusal(exc)
        if refused is None:
            raise
        return error_json(refused)


async def jobs(request: Request) -> Response:
    board = dashboard_of(request)
    try:
        wanted = JobFilter.of(dict(request.query_params))
        limit = _limit(request)
    except Exception as exc:
        return error_json(refusal(exc) or Refused(400, str(exc)))
    return await _answer(request, list_rows, board.client, wanted, board.cache, limit)


async def job(request: Request) -> Response:
    board = dashboard_of(request)
    return await _answer(request, lambda: job_page(board.client, job_id_of(request), board.cache))


async def job_log(request: Request) -> Response:
    board = dashboard_of(request)

    def tail() -> str:
        which = LogRequest.of(dict(request.query_params))
        path, _ = job_files(board.client, job_id_of(request), which)
        return read_log_tail(path)

    try:
        return PlainTextResponse(await board.read(tail), headers=_NO_CACHE)
    except Exception as exc:
        refused = refusal(exc)
        if refused is None:
            raise
        return error_json(refused)


async def job_metrics(request: Request) -> Response:
    board = dashboard_of(request)

    def records() -> list[dict[str, Any]]:
        _, metrics = job_files(board.client, job_id_of(request), LogRequest())
        return read_metrics(metrics)

    return await _answer(request, records)


async def gpus(request: Request) -> Response:
    board = dashboard_of(request)
    return await _answer(request, gpu_grid, board.client, board.cache)


async def nodes(request: Request) -> Response:
    board = dashboard_of(request)
    try:
        hours = float(request.query_params.get("hours", "3"))
    except ValueError:
        return error_json(Refused(400, "hours: a number"))
    return await _answer(request, node_rows, board.client, min(max(hours, 0.1), 48.0))


async def queue(request: Request) -> Response:
    return await _answer(request, queue_rows, dashboard_of(request).client)


async def summary_list(request: Request) -> Response:
    return await _answer(request, summaries, dashboard_of(request).client.settings)


async def summary_day(request: Request) -> Response:
    settings = dashboard_of(request).client.settings
    day = str(request.path_params["day"])

    def read() -> dict[str, Any]:
        text = summary_markdown(settings, day)
        if text is None:
            raise Refused(404, f"no summary for {day[:20]!r}")
        return {"day": day, "markdown": text, "html": render_summary(text)}

    return await _answer(request, read)


# Actions -------------------------------------------------------------------------------


async def _act(request: Request, action: str) -> Response:
    board = dashboard_of(request)
    headers = request.headers
    if not action_allowed(
        board.login, headers.get(CSRF_HEADER), headers.get("origin"), headers.get("host")
    ):
        return error_json(Refused(403, "refused: not sent by one of the dashboard's pages"))

    def run() -> dict[str, Any]:
        job_id = job_id_of(request)
        client = board.client
        done = client.cancel(job_id) if action == "cancel" else client.retry(job_id)
        return {"id": done.id, "status": done.status.value}

    return await _answer(request, run)


async def cancel(request: Request) -> Response:
    return await _act(request, "cancel")


async def retry(request: Request) -> Response:
    return await _act(request, "retry")


# Event streams --------------------------------------------------------------------------


async def events(request: Request) -> Response:
    """Every change, for every page: ``jobs`` (their rows), ``gpus`` (the grid),
    ``nodes`` (health changed), ``redis`` (up or not), ``resync`` (read afresh)."""
    board = dashboard_of(request)
    stream = board.feed.stream(request.is_disconnected)
    return StreamingResponse(stream, media_type="text/event-stream", headers=_STREAM_HEADERS)


async def job_events(request: Request) -> Response:
    """One job's log and metrics as they are written (``follow_job``)."""
    board = dashboard_of(request)
    try:
        which = LogRequest.of(dict(request.query_params))
        log, metrics = await board.read(job_files, board.client, job_id_of(request), which)
    except Exception as exc:
        refused = refusal(exc)
        if refused is None:
            raise
        return error_json(refused)
    stream = follow_job(log, metrics, request.is_disconnected)
    return StreamingResponse(stream, media_type="text/event-stream", headers=_STREAM_HEADERS)


def api_routes() -> list[Route]:
    return [
        Route("/api/jobs", jobs),
        Route("/api/jobs/{job_id}", job),
        Route("/api/jobs/{job_id}/log", job_log),
        Route("/api/jobs/{job_id}/metrics", job_metrics),
        Route("/api/gpus", gpus),
        Route("/api/nodes", nodes),
        Route("/api/queue", queue),
        Route("/api/summaries", summary_list),
        Route("/api/summaries/{day}", summary_day),
        Route("/actions/jobs/{job_id}/cancel", cancel, methods=["POST"]),
        Route("/actions/jobs/{job_id}/retry", retry, methods=["POST"]),
        Route("/events", events),
        Route("/events/jobs/{job_id}", job_events),
    ]
