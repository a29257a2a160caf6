"""A GPU worker's job messages leave Redis as they are received: no unacked copy.

A job message is acknowledged on receipt by design (see ``ugro.execution.attempt``): the
registry's claim, not the message, is what keeps an attempt from running twice, and
a placed job whose message is never claimed goes back to the queue once its lease
runs out (``ugro.execution.reconcile``). Kombu's Redis transport still keeps each message it
delivers in its unacked hash until the ack, for a redelivery after the visibility
timeout that ugro never needs: one round trip before the task is handed on, and one
more for the ack, both in the middle of a job's start. Here the job queue is
consumed with ``no_ack`` (the BRPOP that takes the message is its removal) and a job
request's ack does nothing further when its message came that way.
"""

from __future__ import annotations

from typing import Any

from celery import bootsteps
from celery.worker.request import Request

# Marks the channel of a task consumer that takes messages without an unacked copy.
_MARK = "ugro_acked_on_receipt"


class AckOnReceipt(bootsteps.StartStopStep):  # type: ignore[misc]
    """Consumer step (``app.steps["consumer"]``): the task consumer, set up by Celery's
    Tasks step on each (re)connection, consumes with ``no_ack``."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c: Any) -> None:
        c.task_consumer.no_ack = True
        setattr(c.task_consumer.channel, _MARK, True)


class ReceivedJob(Request):  # type: ignore[misc]
    """The request of a job message (``ugro.run_job``'s ``Request``)."""

    def acknowledge(self) -> None:
        if getattr(self._message.channel, _MARK, False):
            self.acknowledged = True  # taken off the queue when received
            return
        super().acknowledge()
