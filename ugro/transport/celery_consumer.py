"""The workers' Celery consumer: task events go out together, a moment late.

Stock Celery buffers task events and flushes them on the worker's loop thread as
soon as one is sent: three publishes per job (received, started, succeeded), and
the two sent from the job's thread also wake the loop. On a GPU worker the loop
thread shares the interpreter with the job's thread, so each flush lands in the
middle of a job's start. Here the first buffered event arms one flush
``EVENTS_FLUSH_DELAY`` later, and every event sent meanwhile rides with it: one
publish per job or fewer, none at the instant a job starts. Flower sees a task's
events a fraction of a second later; their times are those of the events.
"""

from __future__ import annotations

import time
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer
from vine import promise

#: How long the first buffered task event waits for others to go out with it (s).
EVENTS_FLUSH_DELAY = 0.25
#: Buffered task events that make the dispatcher publish at once, in the thread
#: that sent the last one. Celery's 24 would be reached within a flush's delay on a
#: busy worker, and such a flush wakes no loop; the armed flush does, in time.
EVENTS_BUFFER_LIMIT = 2000


class Consumer(CeleryConsumer):  # type: ignore[misc]
    """Celery's consumer, with task events published in batches (``worker_consumer``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # When the armed flush is due (monotonic), None when none is armed.
        self._events_flush_due: float | None = None
        self._events_buffered_promise = promise(self._events_buffered)

    @property
    def event_dispatcher(self) -> Any:
        return getattr(self, "_event_dispatcher", None)

    @event_dispatcher.setter
    def event_dispatcher(self, dispatcher: Any) -> None:
        # Set by Celery's Events step each time the consumer (re)connects.
        if dispatcher is not None:
            dispatcher.buffer_limit = EVENTS_BUFFER_LIMIT
        self._event_dispatcher = dispatcher

    def on_send_event_buffered(self) -> None:
        # Called by the event dispatcher, from any thread, after it buffered an event.
        if self.hub is None:
            super().on_send_event_buffered()
            return
        # Each event still wakes the loop, as Celery's own flush did: a task's last
        # event comes after it left the worker's reserved requests, and the loop
        # asks the broker for the next message only when it wakes.
        self.hub.call_soon(self._events_buffered_promise)

    def _events_buffered(self) -> None:
        # On the loop's thread, which owns its timers.
        due, now = self._events_flush_due, time.monotonic()
        # An armed flush long overdue was lost with the loop's timers (the consumer
        # restarted): arm another.
        if due is not None and now < due + 1.0:
            return
        self._events_flush_due = now + EVENTS_FLUSH_DELAY
        self.hub.call_later(EVENTS_FLUSH_DELAY, self._flush_armed_events)

    def _flush_armed_events(self) -> None:
        self._events_flush_due = None  # events buffered from now on arm the next one
        self._flush_events()

    def shutdown(self) -> None:
        # What waits in the buffer goes out before the dispatcher is closed.
        self._flush_events()
        super().shutdown()
