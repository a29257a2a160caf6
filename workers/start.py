"""A worker process's start, once Celery is ready: what makes it serve must work,
or the process exits so that its supervisor starts it again; what only catches
up (a reconcile, a dispatch pass) is done if it can be, beat's ticks do it anyway.

A worker that stayed up without serving would be worse than a dead one: it would
consume its queue while dispatch, not seeing it, never sent it anything.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from ugro.registry.outage import wait_out_outage
from ugro.runtime import Runtime
from ugro.settings import Settings
from ugro.tasks import runtime

log = logging.getLogger(__name__)


def start_serving(
    name: str,
    settings: Settings,
    begin: Callable[[Runtime], None],
    catch_up: Callable[[Runtime], object],
) -> None:
    """``begin`` serving (a registry away is waited out), then ``catch_up``."""
    try:
        rt = wait_out_outage(runtime, f"{name}'s start", settings.registry_wait)
        begin(rt)
    except Exception:
        log.exception("%s could not start serving: exiting, to be started again", name)
        logging.shutdown()
        os._exit(3)  # (from a signal handler: Celery would catch an exception)
    try:
        catch_up(rt)
    except Exception:
        log.warning(
            "%s: its first look at the queue failed; beat's ticks look", name, exc_info=True
        )
