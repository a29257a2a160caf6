"""When the registry's database server does not answer: one error that names it,
and a way to wait it out.

A PostgreSQL registry can be away for a while: a restart, a failover, a cut
link. A command that needs it fails at once with ``RegistryUnreachable`` (exit 3)
and creates nothing. A worker with a job in hand cannot fail that way: the job's
claim, start and end are facts that must reach the registry, so it waits the
outage out (``wait_out_outage``), retrying with backoff, and keeps the job's
lease meanwhile so that nobody takes the job for lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.engine import Engine, ExceptionContext
from sqlalchemy.exc import OperationalError

from ugro.errors import RegistryUnreachable

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Seconds between a worker's tries: doubling from the first to the last.
FIRST_RETRY, LAST_RETRY = 0.5, 5.0
#: Seconds a server connection may take to open: a cut link fails in this,
#: not in the minutes of TCP's own retries.
CONNECT_TIMEOUT = 5


def name_unreachable(context: ExceptionContext) -> None:
    """SQLAlchemy's ``handle_error`` hook of a server database's engine: a failed
    connect or a dropped connection becomes ``RegistryUnreachable``, naming the
    server (without its password). A SQLite file has no server to lose."""
    if context.is_pre_ping:
        return  # the pool replaces the connection itself, or fails its connect here
    dropped = context.is_disconnect
    refused = context.connection is None and isinstance(
        context.sqlalchemy_exception, OperationalError
    )
    if not (dropped or refused) or context.engine is None:
        return
    where = context.engine.url.render_as_string(hide_password=True)
    why = str(context.original_exception).strip().splitlines()[0]
    raise RegistryUnreachable(
        f"the registry's database does not answer ({where}): {why}"
    ) from context.original_exception


def watch_server(engine: Engine) -> None:
    """Name a server's outages as ``RegistryUnreachable`` (see ``name_unreachable``)."""
    from sqlalchemy import event

    event.listen(engine, "handle_error", name_unreachable)


def wait_out_outage(
    call: Callable[[], T],
    what: str,
    patience: float,
    meanwhile: Callable[[], object] | None = None,
) -> T:
    """``call``, tried again with backoff for up to ``patience`` seconds while the
    registry does not answer (``meanwhile`` runs before each wait: a job's lease
    renewed, say); ``what`` names the call in the log.

    Raises:
        RegistryUnreachable: the registry was still away after ``patience``.
    """
    delay, away_since = FIRST_RETRY, None
    while True:
        try:
            result = call()
        except RegistryUnreachable as exc:
            now = time.monotonic()
            if away_since is None:
                away_since = now
                log.warning("%s waits for the registry: %s", what, exc)
            if now - away_since + delay > patience:
                log.error("%s: the registry was away for %.0f s; giving up", what, patience)
                raise
            if meanwhile is not None:
                meanwhile()
            time.sleep(delay)
            delay = min(2 * delay, LAST_RETRY)
            continue
        if away_since is not None:
            log.warning(
                "%s done, %.1f s late: the registry answers again",
                what,
                time.monotonic() - away_since,
            )
        return result
