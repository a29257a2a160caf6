"""The cluster's one clock: Redis's.

Hosts' clocks drift apart (a node whose time sync broke is minutes off), so a time
that one process writes and another compares with the present is taken from Redis
(``TIME``), never from the writer's or the reader's own clock: a GPU worker's last
announcement, a retry's due time, a node reading's, when a lease was first seen
missing. Lease and heartbeat expiry is Redis's already (key TTLs), and a process
timing itself uses its monotonic clock.
"""

from __future__ import annotations

import redis


def server_time(client: redis.Redis) -> float:
    """Now by Redis's clock, in unix seconds."""
    return from_reply(client.time())


def from_reply(reply: tuple[int, int]) -> float:
    """Unix seconds from a ``TIME`` reply (seconds, microseconds), as a pipeline
    returns it."""
    seconds, micros = reply
    return seconds + micros / 1e6
