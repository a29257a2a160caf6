"""Reading the status events (``<job id> <status>``, published on every change)
through a Redis pub/sub connection."""

from __future__ import annotations

import time
from typing import Any

import redis

from ugro.jobs.lifecycle import TERMINAL

_ENDED = frozenset(status.value for status in TERMINAL)
#: How long the rest of an event may take to arrive once its first bytes have.
_REST_OF_EVENT = 5.0


def next_event(pubsub: Any, timeout: float) -> dict[str, Any] | None:
    """The next event within ``timeout`` seconds (0: only one already here), else None.

    redis-py (8.x) reads a message with the timeout given for waiting for it. A 0 s
    poll that finds half a message (the rest still on its way: a backlog of events
    fills a unix socket's buffer) then times out in the middle of it, and its retry
    reconnects, dropping the events in flight, or raises once the retries run out.
    Here only the wait for the first byte has the timeout; a message that has
    begun is read whole.
    """
    conn = pubsub.connection
    if conn is None:
        return pubsub.get_message(timeout=timeout)  # type: ignore[no-any-return]
    try:
        ready = conn.can_read(timeout=timeout)
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        # Redis went away: get_message reconnects and subscribes again, or raises.
        return pubsub.get_message(timeout=timeout)  # type: ignore[no-any-return]
    if not ready:
        return None
    return pubsub.get_message(timeout=_REST_OF_EVENT)  # type: ignore[no-any-return]


def await_end(events: Any, ids: set[str], until: float, linger: float = 0.0) -> set[str]:
    """Sleep until status events say some of ``ids`` ended, or until ``until``
    (monotonic); returns those (none: the time ran out). The events already in
    hand are read too, so that one registry read covers them all; with ``linger``
    (s), so are those of that long after the first end while others of ``ids``
    still run: a wait on a sweep then reads the registry once per batch of ends,
    not once per job, and the last job's end is seen at once."""
    ended: set[str] = set()
    stop = until  # after the first end: when to stop reading
    while True:
        now = time.monotonic()
        if not ended and now > until:
            return ended
        message = next_event(events, max(0.0, stop - now))
        if message is None:
            if ended or time.monotonic() >= until:
                return ended
            continue
        job_id, _, status = str(message.get("data", "")).partition(" ")
        if job_id in ids and status in _ENDED:
            if not ended:
                stop = min(until, time.monotonic() + linger)
            ended.add(job_id)
            if len(ended) == len(ids):
                stop = 0.0  # none left to wait for: only what is in hand
