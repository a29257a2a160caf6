"""A placed job's Celery message, built to go out in the same Redis transaction as
the job's live record.

``Celery.send_task`` publishes through kombu's Redis transport on a client of its
own: a round trip of its own after the one that wrote the job's live record, and a
window between the two in which a client that dies leaves a job placed with no
message (found only when its lease runs out). Here Celery builds the task message
(``app.amqp.as_task_v2``, kombu's serializer for the body) and the caller pushes
it in its own MULTI, as kombu's transport would: the envelope below is kombu's
Redis message (``Channel.prepare_message`` and ``basic_publish`` on the default
exchange, which routes to the queue of the same name), LPUSHed onto the queue's
list under Celery's key prefix (``Keys.celery``).
``tests/integration/test_live_job_message.py`` holds it to what ``send_task``
itself puts in Redis, field by field, so a kombu that changes its envelope fails
there.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from typing import Any

from kombu.serialization import dumps

from ugro.live.keys import Keys

#: The task that runs a placed job on its GPU's worker.
RUN_JOB = "ugro.run_job"
# kombu's persistent delivery mode, the default exchange's.
_PERSISTENT = 2


@dataclass(frozen=True)
class JobMessage:
    """One message ready for LPUSH: the list's key and the message as kombu stores it."""

    key: str
    payload: str


def job_message(
    app: Any,
    keys: Keys,
    queue: str,
    job_id: str,
    token: str,
    node: str,
    gpus: list[int],
    rank: int | None = None,
) -> JobMessage:
    """The message on ``queue`` that runs ``job_id`` on ``gpus`` of ``node`` (with
    ``rank``: that member of a gang job)."""
    task_id = str(uuid.uuid4())
    kwargs: dict[str, Any] = {"job_id": job_id, "token": token, "node": node, "gpus": gpus}
    # What Flower and the logs show: the lease token stays out of sight.
    seen: dict[str, Any] = {"job_id": job_id, "node": node, "gpus": gpus}
    if rank is not None:
        kwargs["rank"] = seen["rank"] = rank
    shown = repr(seen)
    headers, properties, body, _ = app.amqp.as_task_v2(
        task_id,
        RUN_JOB,
        args=(),
        kwargs=kwargs,
        kwargsrepr=shown,
        reply_to=app.thread_oid,
        ignore_result=None,  # as send_task leaves it: the task's own setting holds
    )
    content_type, content_encoding, data = dumps(body, serializer="json")  # type: ignore[no-untyped-call]
    properties.update(
        kwargsrepr=shown,  # send_task passes its options on as properties too
        delivery_mode=_PERSISTENT,
        delivery_info={"exchange": "", "routing_key": queue},
        priority=0,
        body_encoding="base64",
        delivery_tag=str(uuid.uuid4()),
    )
    envelope = {
        "body": base64.b64encode(data.encode() if isinstance(data, str) else data).decode(),
        "content-encoding": content_encoding,
        "content-type": content_type,
        "headers": headers,
        "properties": properties,
    }
    return JobMessage(keys.celery(queue), json.dumps(envelope))
