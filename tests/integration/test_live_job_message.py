"""A job message built for the caller's own MULTI is the one Celery itself sends."""

from __future__ import annotations

import base64
import json
from typing import Any

import redis

from ugro.live.job_message import RUN_JOB
from ugro.runtime import Runtime
from ugro.settings import Settings
from ugro.transport.queues import queue_for_gpu

# What differs between any two messages: their ids, and the sending thread's
# reply queue (one per process and thread).
_PER_MESSAGE = {"id", "root_id"}
_PER_PROPERTY = {"correlation_id", "delivery_tag"}


def _popped(live_redis: redis.Redis, key: str) -> dict[str, Any]:
    raw = live_redis.rpop(key)
    assert isinstance(raw, str), f"no message on {key}"
    assert live_redis.llen(key) == 0
    return dict(json.loads(raw))


def test_a_job_message_is_what_celery_sends_field_by_field(
    settings: Settings, live_redis: redis.Redis
) -> None:
    rt = Runtime.open(settings)
    try:
        queue = queue_for_gpu(settings, "n1", 2)
        key = f"{settings.redis_prefix}:{queue}"
        # Given the message Celery's own send_task puts in Redis
        rt.app.send_task(
            RUN_JOB,
            kwargs={"job_id": "job-1", "token": "t0k", "node": "n1", "gpus": [2, 3]},
            kwargsrepr=repr({"job_id": "job-1", "node": "n1", "gpus": [2, 3]}),
            queue=queue,
        )
        sent = _popped(live_redis, key)
        # When the same job's message is built for a MULTI of ugro's own
        built = rt.job_message("job-1", "t0k", "n1", [2, 3])
        assert built.key == key
        live_redis.lpush(built.key, built.payload)
        ours = _popped(live_redis, key)
    finally:
        rt.close()
    # Then it is the same message but for its ids
    assert ours.keys() == sent.keys()
    for field in ("content-type", "content-encoding"):
        assert ours[field] == sent[field]
    assert ours["headers"].keys() == sent["headers"].keys()
    for name, value in sent["headers"].items():
        if name not in _PER_MESSAGE:
            assert ours["headers"][name] == value, name
    assert ours["headers"]["id"] == ours["headers"]["root_id"] != sent["headers"]["id"]
    assert ours["properties"].keys() == sent["properties"].keys()
    for name, value in sent["properties"].items():
        if name not in _PER_PROPERTY:
            assert ours["properties"][name] == value, name
    assert ours["properties"]["correlation_id"] == ours["headers"]["id"]
    assert ours["properties"]["delivery_tag"] != sent["properties"]["delivery_tag"]
    # ... its body the same task call, the lease token in it but not in its shown form
    assert base64.b64decode(ours["body"]) == base64.b64decode(sent["body"])
    assert "t0k" not in ours["headers"]["kwargsrepr"]
