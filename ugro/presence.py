"""A GPU worker's presence in Redis: announced while it serves its queue.

A thread refreshes the worker's entry every third of ``worker_ttl``; dispatch
places nothing on a GPU whose entry is missing or stale, so a dead worker stops
receiving jobs within ``worker_ttl``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

import redis

from ugro.live import LiveState

log = logging.getLogger(__name__)


class Presence:
    def __init__(self, live: LiveState, node: str, index: int, ttl: float) -> None:
        self.live = live
        self.node = node
        self.index = index
        self.interval = ttl / 3
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ugro-presence", daemon=True)

    def start(self) -> None:
        self._announce()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        try:
            self.live.unregister_worker(self.node, self.index)
        except redis.RedisError:
            log.warning("could not remove the presence of GPU %s:%s", self.node, self.index)

    def _announce(self) -> None:
        self.live.register_worker(self.node, self.index, os.getpid(), socket.gethostname())

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._announce()
            except redis.RedisError as exc:  # Redis restarting: keep trying
                log.warning("presence refresh failed: %s", exc)
