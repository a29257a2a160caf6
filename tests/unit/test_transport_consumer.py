"""The workers' Celery consumer: task events are published by time, not by count."""

from __future__ import annotations

from types import SimpleNamespace

from ugro.transport.celery_consumer import EVENTS_BUFFER_LIMIT, Consumer


def test_a_dispatcher_set_on_the_consumer_keeps_events_for_the_armed_flush() -> None:
    # Celery's dispatcher publishes at 24 buffered events, in whichever thread sent
    # the 24th, and that flush wakes no loop: a busy worker would wait for the armed
    # flush before it took its next message.
    consumer = Consumer.__new__(Consumer)
    dispatcher = SimpleNamespace(buffer_limit=24)
    consumer.event_dispatcher = dispatcher
    assert consumer.event_dispatcher is dispatcher
    assert dispatcher.buffer_limit == EVENTS_BUFFER_LIMIT
    consumer.event_dispatcher = None  # as Celery's Events step does on closing
    assert consumer.event_dispatcher is None
