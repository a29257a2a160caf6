"""The Redis client of a process: one that answers, or an error that says why not
(not running, a password wanted or refused); for workers, one that rides out a
restart."""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ugro.errors import NotRunningError
from ugro.settings import Settings


def connect(
    settings: Settings, timeout: float = 5.0, wait_out_restarts: bool = False
) -> redis.Redis:
    """A client for the configured Redis; NotRunningError when it does not answer.

    With ``wait_out_restarts`` (workers and agents, mid-job), a command that finds Redis
    gone retries with backoff for about a minute, so a Redis restart does not fail
    the job a worker runs. A person's command fails fast instead.
    """
    client = redis.Redis.from_url(
        settings.effective_redis_url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        decode_responses=True,
    )
    where = "the embedded Redis" if settings.embedded_redis else settings.shown_redis_url
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        # (before ConnectionError: redis-py makes it one of those)
        if "required" in str(exc).lower():
            why = "wants a password: give it in UGRO_REDIS_URL (redis://:PASSWORD@host:port)"
        else:
            why = "refused the password: check the password in UGRO_REDIS_URL"
        raise NotRunningError(f"{where} {why}") from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        hint = "start it with `ugro up`" if settings.embedded_redis else "check UGRO_REDIS_URL"
        raise NotRunningError(f"cannot reach {where} ({exc}): {hint}") from None
    if wait_out_restarts:
        retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=40)
        client.connection_pool.connection_kwargs.update(
            retry=retry, retry_on_error=[redis.ConnectionError, redis.TimeoutError, OSError]
        )
        client.connection_pool.reset()
        client.set_retry(retry)
    return client
