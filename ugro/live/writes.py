"""``Writes``: the Redis commands of one step, queued for its caller to send.

A job's end, the release of its leases and the dispatch pass that follows are
written to Redis in one round trip: each part queues its commands on the same
MULTI/EXEC pipeline and the caller executes it once. Modules pass it along typed
as ``Writes``, never as ``Any``.
"""

from __future__ import annotations

from typing import TypeAlias

import redis

#: A transaction (MULTI/EXEC) pipeline of the live state's Redis client.
Writes: TypeAlias = redis.client.Pipeline
