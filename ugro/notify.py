"""Notifications: a title, a body and files to every URL in ``UGRO_NOTIFY_URLS``.

Sent through apprise, which speaks Slack (``slack://``), email (``mailto://``),
generic webhooks (``json://``, ``jsons://``) and many more. The daily summary and
the health sweep's critical alerts go out this way.

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
