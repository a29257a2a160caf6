"""A GPU worker's presence in a real Redis: a worker on its way out stays out."""

from __future__ import annotations

import threading

import redis

from ugro.gpus.base import GpuInfo
from ugro.gpus.fake import FakeBackend
from ugro.live.presence import Presence
from ugro.live.state import LiveState
from ugro.settings import Settings


class HeldReading(FakeBackend):
    """A simulated GPU whose readings after the first wait until let go: a refresh
    of the worker's presence caught in the middle."""

    def __init__(self) -> None:
        super().__init__(1)
        self.readings = 0
        self.reading = threading.Event()
        self.go = threading.Event()

    def devices(self) -> list[GpuInfo]:
        self.readings += 1
        if self.readings > 1:
            self.reading.set()
            self.go.wait(10)
        return super().devices()


def test_a_refresh_under_way_does_not_announce_a_stopped_worker_again(
    settings: Settings, live_redis: redis.Redis
) -> None:
    live = LiveState.open(settings)
    backend = HeldReading()
    presence = Presence(live, "n", 0, ttl=0.3, backend=backend, memory_threshold_mb=500)
    presence.start()
    assert [w.index for w in live.workers(max_age=60)] == [0]
    # Given a refresh reading the GPU as the worker begins to shut down
    assert backend.reading.wait(10)
    threading.Timer(0.3, backend.go.set).start()
    # When its presence stops, and the refresh has finished
    presence.stop()
    presence._thread.join(10)
    # Then the worker is not announced again: dispatch places nothing on it
    assert not presence._thread.is_alive()
    assert live.workers(max_age=60) == []
