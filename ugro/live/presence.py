"""A GPU worker's presence in Redis: announced while it serves its queue.

A thread refreshes the worker's entry every third of ``worker_ttl`` with a fresh
reading of its GPU, and whether another program keeps that GPU busy. Dispatch
places nothing on a GPU whose entry is missing, stale or blocked; when a block
lifts, the worker asks for a dispatch pass at once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

import redis

from ugro.gpus.base import GpuBackend, GpuInfo, foreign_use
from ugro.live.state import LiveState

log = logging.getLogger(__name__)


class Presence:
    def __init__(
        self,
        live: LiveState,
        node: str,
        index: int,
        ttl: float,
        backend: GpuBackend,
        memory_threshold_mb: float,
        on_unblocked: Callable[[], object] = lambda: None,
    ) -> None:
        self.live = live
        self.node = node
        self.index = index
        self.interval = ttl / 3
        self.backend = backend
        self.memory_threshold_mb = memory_threshold_mb
        self.on_unblocked = on_unblocked
        self.blocked: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ugro-presence", daemon=True)

    def start(self) -> None:
        self._announce()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        # An announcement under way would put the worker back after its removal,
        # and a job could be placed on a GPU whose worker is on its way out.
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        try:
            self.live.unregister_worker(self.node, self.index)
        except redis.RedisError:
            log.warning("could not remove the presence of GPU %s:%s", self.node, self.index)

    def _reading(self) -> GpuInfo | None:
        try:
            return next(d for d in self.backend.devices() if d.index == self.index)
        except Exception:  # a driver hiccup must not stop the announcements
            log.exception("reading GPU %s failed", self.index)
            return None

    def _announce(self) -> None:
        device = self._reading()
        was = self.blocked
        if device is not None:
            leased = self.live.leases.lease_holders(self.node, [self.index])[self.index] is not None
            self.blocked = foreign_use(device, leased, self.memory_threshold_mb)
        if self.blocked != was:
            log.warning("GPU %s: %s", self.index, self.blocked or "free again")
        self.live.register_worker(
            self.node,
            self.index,
            os.getpid(),
            socket.gethostname(),
            self.blocked,
            None if device is None else device.to_dict(),
        )
        if was and not self.blocked:
            self.on_unblocked()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._announce()
            except redis.RedisError as exc:  # Redis restarting: keep trying
                log.warning("presence refresh failed: %s", exc)
