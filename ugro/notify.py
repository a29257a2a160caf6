"""Notifications: a title, a body and files to every URL in ``UGRO_NOTIFY_URLS``.

Sent through apprise, which speaks Slack (``slack://``), email (``mailto://``),
generic webhooks (``json://``, ``jsons://``) and many more. The daily summary,
the health sweep's alerts and the notices of jobs' ends go out this way.

``notify`` never raises and does not retry: it reports, and the caller decides.
The daily summary retries through Celery (``ugro.daily_summary``), so that no
worker is held while a webhook is down; an alert is simply logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from ugro.settings import Settings

log = logging.getLogger(__name__)


def shown(url: str) -> str:
    """A notification URL fit for a log: scheme and host, never its tokens or password."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def notify(settings: Settings, title: str, body: str, attachments: Iterable[Path] = ()) -> bool:
    """Send ``title`` and ``body`` (Markdown) with ``attachments`` to every URL in
    ``settings.notify_url_list``.

    Args:
        settings: where the URLs come from.
        title: one line.
        body: Markdown; services that take plain text get it converted.
        attachments: files to attach where the service takes files (json:// sends
            them inline, base64); services that take none get the text alone.

    Returns:
        True when every URL accepted the message (or none is configured); False
        when any URL is malformed or its service refused or could not be reached.
        Each failure is logged with the URL's scheme and host only.
    """
    import apprise  # here, not at import: beat and the CLI load this module too

    files = [str(path) for path in attachments if Path(path).is_file()]
    delivered = True
    for url in settings.notify_url_list:
        sender = apprise.Apprise()
        if not sender.add(url):
            log.error(
                "notification URL %s is not one apprise understands; fix UGRO_NOTIFY_URLS",
                shown(url),
            )
            delivered = False
            continue
        try:
            sent = bool(
                sender.notify(
                    body=body,
                    title=title,
                    body_format=apprise.NotifyFormat.MARKDOWN,
                    attach=files or None,
                )
            )
        except Exception:  # a broken plugin must not take the caller down
            log.exception("sending %r to %s failed", title, shown(url))
            sent = False
        if not sent:
            log.warning("sending %r to %s failed", title, shown(url))
            delivered = False
    return delivered


def job_end_message(
    job_id: str,
    name: str,
    status: str,
    exit_reason: str | None,
    duration_s: float | None,
    error: str | None,
    best_score: str | None,
) -> tuple[str, str]:
    """The title and body that tell a job's end (``UGRO_NOTIFY_ON``, a job's
    ``notify``): its status, how it exited, how long it ran, its error line and
    its best score."""
    title = f"ugro: job {name} {status}"
    lines = [
        f"**{job_id}** ({name}) {status}",
        f"- exit: {exit_reason or '-'}",
        f"- duration: {_duration(duration_s)}",
    ]
    if error:
        lines.append(f"- error: {error}")
    if best_score:
        lines.append(f"- best score: {best_score}")
    return title, "\n".join(lines)


def array_end_message(
    array_id: str, statuses: dict[str, int], failures: list[tuple[str, str]]
) -> tuple[str, str]:
    """The title and body that tell an array's (or sweep's) end, once its last
    task ended: its tasks by status and its first failures (id, error line)."""
    total = sum(statuses.values())
    failed = statuses.get("failed", 0)
    verdict = f"{failed} of {total} failed" if failed else f"all {total} ended"
    counts = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
    lines = [f"**{array_id}**: {total} tasks, {counts}"]
    lines += [f"- {job_id}: {error}" for job_id, error in failures]
    return f"ugro: array {array_id} done, {verdict}", "\n".join(lines)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
