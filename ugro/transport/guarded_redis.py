"""Celery's Redis transport with a guard at the door: what a queue holds that is
not a message of JSON (stray bytes, some other program's JSON, a body that does
not decode) is dropped with a line in the log, never run and never fatal.

kombu's own transport parses each popped item and hands it on unguarded: bytes
that are not JSON stop the worker ("Unrecoverable error: JSONDecodeError"), and
JSON without a message's envelope drops its broker connection. The item was popped
either way, so dropping it loses nothing that was ever a message. A well-formed
message of a task that is not ugro's is Celery's to refuse ("unregistered task"),
and a pickled one is refused by ``accept_content`` (``celery_app``).

``install`` makes the ``redis://`` (and ``redis+socket://``) scheme resolve here for
every kombu connection of the process: ugro's workers, beat and clients alike.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis
from kombu.transport.virtual import Empty

log = logging.getLogger(__name__)


def _dropped(why: object) -> None:
    log.warning("dropped an item of a queue that is not a message of ugro's: %s", why)


def _is_envelope(message: Any) -> bool:
    """Whether ``message`` has the fields kombu reads from every message."""
    if not isinstance(message, dict):
        return False
    properties = message.get("properties")
    return isinstance(properties, dict) and "delivery_tag" in properties


class GuardedChannel(kombu_redis.Channel):
    def _brpop_read(self, **options: Any) -> Any:
        try:
            return super()._brpop_read(**options)  # type: ignore[no-untyped-call]
        except json.JSONDecodeError as exc:
            _dropped(f"not JSON ({exc})")
            raise Empty() from None

    def _get(self, queue: Any, timeout: Any = None) -> Any:
        try:
            return super()._get(queue)  # type: ignore[no-untyped-call]
        except json.JSONDecodeError as exc:
            _dropped(f"not JSON ({exc})")
            raise Empty() from None


class Transport(kombu_redis.Transport):
    Channel = GuardedChannel

    def _deliver(self, message: Any, queue: str) -> None:
        if not _is_envelope(message):
            _dropped(f"JSON without a message's envelope: {str(message)[:200]!r}")
            return
        try:
            super()._deliver(message, queue)  # type: ignore[no-untyped-call]
        except (KeyError, TypeError, ValueError) as exc:
            # (raised making the message from the envelope: a body that does not
            # decode; Celery handles what goes wrong past that itself)
            _dropped(f"{type(exc).__name__}: {exc}")


def install() -> None:
    """Resolve kombu's ``redis`` scheme to this transport (see the module's note)."""
    TRANSPORT_ALIASES["redis"] = f"{__name__}:Transport"
