"""Status events read through the embedded Redis's unix socket: a message that
arrives in parts is read whole by a 0 s poll, with no event lost and no error."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ugro.live.connection import connect
from ugro.live.events import await_end, next_event
from ugro.ops.redis_server import EmbeddedRedis
from ugro.settings import Settings

_CHANNEL = "ugro:events"


@contextlib.contextmanager
def _subscribed(settings: Settings, wait_out_restarts: bool = False) -> Iterator[tuple[Any, Any]]:
    """A client and its subscription to the events channel, closed at the end."""
    client = connect(settings, wait_out_restarts=wait_out_restarts)
    pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    pubsub.subscribe(_CHANNEL)
    try:
        yield client, pubsub
    finally:
        pubsub.close()
        client.close()


@pytest.mark.timeout(30)
def test_an_event_arriving_in_parts_is_read_whole_by_a_zero_second_poll(
    embedded_settings: Settings, redis_server: EmbeddedRedis
) -> None:
    with _subscribed(embedded_settings) as (client, pubsub):
        # A message bigger than the socket's buffer arrives in parts, as does one
        # that straddles the end of a buffer when a busy client (submitting a
        # thousand jobs) finds its events piled up: a 0 s poll must not stop in
        # the middle of it.
        sent = ["x" * 8_000_000, "job-1 finished"]
        for event in sent:
            client.publish(_CHANNEL, event)
        got: list[str] = []
        deadline = time.monotonic() + 20
        while len(got) < len(sent) and time.monotonic() < deadline:
            message = next_event(pubsub, 0)
            if message is not None:
                got.append(message["data"])
        assert got == sent


@pytest.mark.timeout(60)
def test_a_poll_that_finds_redis_restarted_subscribes_again_where_it_may_retry(
    embedded_settings: Settings, redis_server: EmbeddedRedis
) -> None:
    # A client that rides out a restart (as workers' do) reconnects through the
    # poll as get_message alone did; a person's command fails fast, as before.
    with _subscribed(embedded_settings, wait_out_restarts=True) as (client, pubsub):
        redis_server.stop()
        redis_server.start()
        # Polls until one is subscribed again and hears what is published after it.
        deadline = time.monotonic() + 30
        got: list[str] = []
        while not got:
            assert time.monotonic() < deadline, "no event after the restart"
            client.publish(_CHANNEL, "job-2 finished")
            message = next_event(pubsub, 0.2)
            if message is not None:
                got.append(message["data"])
        assert got == ["job-2 finished"]


@pytest.mark.timeout(30)
def test_a_wait_reads_on_after_an_end_while_others_run_and_not_after_the_last(
    embedded_settings: Settings, redis_server: EmbeddedRedis
) -> None:
    with _subscribed(embedded_settings) as (client, pubsub):
        while next_event(pubsub, 0.2) is not None:  # (the subscription's confirmation)
            pass
        # An end while others run: what else ends within the linger comes with it
        # (job-c's event is published while it lingers)
        client.publish(_CHANNEL, "job-a finished")
        client.publish(_CHANNEL, "job-x running")
        timer = threading.Timer(0.3, client.publish, (_CHANNEL, "job-c failed"))
        timer.start()
        began = time.monotonic()
        try:
            ended = await_end(pubsub, {"job-a", "job-b", "job-c"}, began + 20, linger=1.0)
        finally:
            timer.join()
        assert ended == {"job-a", "job-c"}
        assert 0.9 < time.monotonic() - began < 10
        # The last of the jobs waited on: seen at once, the linger notwithstanding
        client.publish(_CHANNEL, "job-b cancelled")
        began = time.monotonic()
        assert await_end(pubsub, {"job-b"}, began + 20, linger=10.0) == {"job-b"}
        assert time.monotonic() - began < 5
        # Nothing ends: the time runs out
        assert await_end(pubsub, {"job-b"}, time.monotonic() + 0.2, linger=10.0) == set()
