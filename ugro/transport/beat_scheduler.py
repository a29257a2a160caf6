"""One beat schedules at a time: RedBeat's lock in Redis, kept through a wipe.

RedBeat (celery-redbeat) keeps the schedule in Redis and lets only the beat that
holds its lock send anything; a second beat started by mistake, or a standby on
another host, waits in ``beat_init`` until the lock is free, and takes over at
most ``beat_lock_timeout`` after the active beat died.

RedBeat assumes Redis keeps its keys. After a FLUSHALL or a restart of a server
that kept nothing, its lock and its schedule are gone: the lock's renewal fails
and an empty schedule sends nothing ever again, so beat's reconcile tick, which
rebuilds live state after exactly such a wipe, would never come. ``SingleBeat``
notices both at its next tick: it takes the lock again (waiting, as a standby
does, while another beat holds it) and installs the schedule again.

While Redis restarts, a tick cannot reach it: Celery's beat would exit on the
error, and nothing would schedule until someone started it again. ``SingleBeat``
waits the restart out instead, trying again every second; a lock that ran out
meanwhile is taken back as after a wipe.
"""

from __future__ import annotations

import logging
from typing import Any

from redbeat.schedulers import RedBeatScheduler, get_redis  # also connects its lock on beat_init
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)
# Seconds between a beat's tries to reach a Redis that does not answer: a restart
# takes about that long.
_RETRY = 1.0


class SingleBeat(RedBeatScheduler):  # type: ignore[misc]
    """RedBeat's scheduler, taking its lock and schedule back after a Redis wipe."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # installs the schedule in Redis
        # (next, beat_init takes the lock: a standby waits there, and says so only
        # at debug level, so an operator would not know why it sends nothing)
        log.info("beat: schedule installed; taking the lock %s (a standby waits)", self.lock_key)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        try:
            interval: float = super().tick(*args, **kwargs)  # renews the lock first
        except LockError:
            self._take_lock_back()
            return 0.0  # tick again at once, holding the lock
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.warning("beat: Redis does not answer (%s); trying again in %s s", exc, _RETRY)
            return _RETRY
        if not self._schedule_whole():
            log.warning("beat: the schedule is gone from Redis (wiped?); installing it again")
            self.setup_schedule()
            return 0.0
        return interval

    def _schedule_whole(self) -> bool:
        """Every entry of the schedule is in Redis. After a wipe some may be back
        already (a tick that was sending one wrote it again), so each is looked for."""
        conf = self.app.redbeat_conf
        with get_redis(self.app).pipeline() as pipe:
            pipe.exists(conf.statics_key)
            for name in conf.schedule:
                pipe.zscore(conf.schedule_key, self.Entry.generate_key(self.app, name))
            statics, *scores = pipe.execute()
        return bool(statics) and all(score is not None for score in scores)

    def _take_lock_back(self) -> None:
        log.warning(
            "beat: lost the lock %s (Redis wiped, or this beat paused longer than %s s);"
            " taking it again, waiting while another beat holds it",
            self.lock_key,
            self.lock_timeout,
        )
        self.lock.acquire()
        log.info("beat: holds the lock %s again", self.lock_key)
