"""What a running job's worker asks Redis, off the runner's loop: its lease's
renewals and the requests to stop it.

A worker cut off from Redis cannot renew its job's lease: the rest of the cluster
declares the job lost once the lease has run out (``lease_ttl`` after its last
renewal) and runs it elsewhere. So the worker stops the job itself first, once it
has not renewed the lease for ``fence_grace`` (less than ``lease_ttl``): it fences
itself, and no attempt runs twice. A Redis command to an unreachable server waits
(a worker's client rides out restarts); here it waits in this thread, while the
runner's loop goes on reading what the thread last learnt.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

log = logging.getLogger(__name__)
# How often the requests to stop the job are looked for (one GET or MGET).
_STOP_POLL = 0.5

StopAsked = Callable[[], tuple[float, str] | None]


class JobWatch:
    """Renews a running job's lease every ``interval`` (``renew``: False when the
    lease is another's) and looks for stop requests (``stop_asked``), in a thread
    of its own from the runner's first look (a job that ends before it, most of a
    sweep of short jobs, costs no thread) to ``stop``."""

    def __init__(
        self, renew: Callable[[], bool], stop_asked: StopAsked, interval: float, fence_grace: float
    ) -> None:
        self._renew = renew
        self._stop_asked = stop_asked
        self.interval = interval
        self.fence_grace = fence_grace
        self._done = threading.Event()
        self._renewed = time.monotonic()
        self._lease_taken = False
        self._asked: tuple[float, str] | None = None
        self._thread = threading.Thread(target=self._watch, name="job-watch", daemon=True)

    def start(self) -> None:
        """The job started: its lease was renewed as it did."""
        self._renewed = time.monotonic()

    def _watching(self) -> None:
        if self._thread.ident is None and not self._done.is_set():
            self._thread.start()

    def stop(self) -> None:
        """Stop watching (without waiting: a Redis command under way may wait long)."""
        self._done.set()

    def holds_lease(self) -> bool:
        """False once the lease is another's, or not renewed for ``fence_grace``."""
        self._watching()
        if self._lease_taken:
            return False
        silent = time.monotonic() - self._renewed
        if silent > self.fence_grace:
            log.warning("lease not renewed for %.0f s: stopping the job (self-fenced)", silent)
            return False
        return True

    def stop_asked(self) -> tuple[float, str] | None:
        """The last stop request seen: (grace, reason), or None."""
        self._watching()
        return self._asked

    def _watch(self) -> None:
        next_renewal = time.monotonic() + self.interval
        while not self._done.wait(_STOP_POLL):
            try:
                asked = self._stop_asked()
                if asked is not None:
                    self._asked = asked
                if time.monotonic() >= next_renewal:
                    next_renewal = time.monotonic() + self.interval
                    if self._renew():
                        self._renewed = time.monotonic()
                    else:
                        self._lease_taken = True
            except redis.RedisError as exc:
                log.warning("Redis away from a running job's watch: %s", exc)
