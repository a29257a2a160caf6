"""Live updates for every open page, from one Redis subscription.

One ``LiveFeed`` per server. It listens to ugro's status events (``<job id>
<status>``, published by every status change), reads the jobs they name from the
registry once, in batches of what arrived within ``_BATCH`` seconds, and hands the
rows to every open page's queue as one encoded server-sent event: the cost of an
event is one registry read whatever the number of pages, and an idle page costs
nothing but a keepalive comment every ``KEEPALIVE`` seconds.

What no event announces is watched once a second for all pages together: jobs
new in the registry (a submit announces only the first job of its batch, and a
job held there nothing; one indexed query, run at once on such an announcement),
the files of running jobs (a new epoch moves a progress bar; only their folder's
and metrics' stat is read until one changes),
the GPUs as dispatch sees them and the health sweep's latest finding per node
(sent only when they differ from the last).

When Redis goes away the feed says so to the pages, reconnects with backoff and,
once back, tells every page to read its data afresh (``resync``): events sent
while it was away are not lost to them. A page whose queue overflows (a client
too slow to read) gets the same ``resync`` instead of the events it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import threading
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from ugro.client import Client
from ugro.jobs.lifecycle import JobStatus
from ugro.live.keys import Keys
from ugro.registry.models import JobRow
from ugro.web.cluster_rows import gpu_grid
from ugro.web.job_rows import ProgressCache, rows_by_id

log = logging.getLogger(__name__)

#: Seconds between keepalive comments on an idle stream (proxies close silent ones).
KEEPALIVE = 15.0
#: How long (s) events are gathered into one registry read and one message.
_BATCH = 0.02
#: Seconds between looks at what no event announces (new jobs, job files, GPUs,
#: health): a change reaches the pages within a second.
_WATCH_INTERVAL = 0.5
#: Events a page may have waiting before it is told to resync instead.
_PAGE_QUEUE = 256
#: New jobs sent as rows in one look; more (a large array submitted) and the pages
#: are told to read their list afresh instead.
_NEW_ROWS = 200
#: Changed jobs sent as rows in one message; more and the pages read afresh.
_EVENT_ROWS = 2000
#: Reconnect backoff (s) while Redis is away.
_BACKOFF_FIRST, _BACKOFF_MAX = 0.2, 5.0
_T = TypeVar("_T")
#: Older than any job: where the look for new jobs starts in an empty registry.
_BEFORE_ANY_JOB = datetime(2000, 1, 1, tzinfo=UTC)


def encode_event(kind: str, data: Any) -> bytes:
    """One server-sent event."""
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class LiveFeed:
    """The server's one subscription to ugro's events, fanned out to every page."""

    def __init__(self, client: Client, cache: ProgressCache) -> None:
        self.client = client
        self.cache = cache
        #: Changes each start: a page that reconnects to another life reads afresh.
        self.instance = secrets.token_hex(6)
        self.redis_up = True
        self._pages: set[asyncio.Queue[bytes]] = set()
        self._changed: set[str] = set()
        self._wake_publisher = asyncio.Event()
        self._wake_watcher = asyncio.Event()
        self._running: dict[str, tuple[int, int]] = {}  # job -> its files' last stamp
        # The newest submission seen, as the registry hands it back, and the jobs of
        # that moment already sent.
        self._newest: Any = None
        self._at_newest: set[str] = set()
        self._last: dict[str, str] = {}  # kind -> digest of what was last sent
        self._tasks: list[asyncio.Task[None]] = []
        # One look at a time in the worker threads (they share what was last seen).
        self._looking = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Set when events went unread for want of pages: the running jobs are read
        # afresh at the next look.
        self._stale = True

    # Pages -------------------------------------------------------------------------

    @property
    def pages(self) -> int:
        return len(self._pages)

    def broadcast(self, kind: str, data: Any) -> None:
        self._send_all(encode_event(kind, data))

    def _send_all(self, message: bytes) -> None:
        for queue in self._pages:
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(encode_event("resync", {"why": "too slow"}))

    async def stream(self, is_gone: Callable[[], Any]) -> AsyncIterator[bytes]:
        """A page's events, until it goes (``is_gone``: awaitable, True once the
        client disconnected)."""
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=_PAGE_QUEUE)
        self._pages.add(queue)
        try:
            hello = {"instance": self.instance, "redis": self.redis_up}
            yield b"retry: 1000\n" + encode_event("hello", hello)
            while True:
                try:
                    yield await asyncio.wait_for(queue.get(), KEEPALIVE)
                except TimeoutError:
                    if await is_gone():
                        return
                    yield b": keepalive\n\n"
        finally:
            self._pages.discard(queue)

    # Life --------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tasks = [
            asyncio.create_task(self._listen(), name="ugro-web-listen"),
            asyncio.create_task(self._publish(), name="ugro-web-publish"),
            asyncio.create_task(self._watch(), name="ugro-web-watch"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # The subscription --------------------------------------------------------------

    async def _listen(self) -> None:
        settings = self.client.settings
        channel = Keys(settings.redis_prefix).events_channel
        backoff = _BACKOFF_FIRST
        first = True
        while True:
            conn = aioredis.Redis.from_url(
                settings.effective_redis_url,
                decode_responses=True,
                socket_connect_timeout=5,
                health_check_interval=30,
            )
            try:
                pubsub = conn.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(channel)
                await self._redis_back(resync=not first)
                first, backoff = False, _BACKOFF_FIRST
                async for message in pubsub.listen():
                    job_id, _, status = str(message.get("data", "")).partition(" ")
                    if job_id:
                        self._changed.add(job_id)
                        self._wake_publisher.set()
                    if status == "queued":
                        # (a submit announces its batch by its first job: the look
                        # for new jobs finds the rest now, not at its next turn)
                        self._wake_watcher.set()
            except (redis.RedisError, OSError) as exc:
                if self.redis_up:
                    log.warning("Redis went away (%s); reconnecting", exc)
                    self.redis_up = False
                    self.broadcast("redis", {"up": False})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
            except Exception:  # the registry away: subscribe again, and read again
                log.exception("following the status events")
                first = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
            finally:
                with contextlib.suppress(Exception):
                    await conn.aclose()

    async def _redis_back(self, resync: bool) -> None:
        """Subscribed (again): read the running jobs anew and, after an outage, tell
        every page to read its data afresh."""
        await self._offload(self._read_running)
        if not self.redis_up or resync:
            self.redis_up = True
            self.broadcast("redis", {"up": True})
            self.broadcast("resync", {"why": "redis reconnected"})
        self._wake_watcher.set()

    def _read_running(self) -> None:
        with self._looking:
            self._read_running_now()

    def _read_running_now(self) -> None:
        rows = self.client.rt.registry.list_jobs(statuses=[JobStatus.RUNNING])
        self._running = {row.id: self.cache.stamp(self.client, row.id) for row in rows}
        if self._newest is None:
            self._new_job_ids()  # from now on: what is there is not new

    def _new_job_ids(self) -> list[str] | None:
        """Jobs submitted since the last look, oldest first (None: too many to send
        as rows)."""
        query = select(JobRow.id, JobRow.created_at).order_by(JobRow.created_at.desc())
        if self._newest is not None:
            query = query.where(JobRow.created_at >= self._newest)
        query = query.limit(_NEW_ROWS + len(self._at_newest) + 1)
        with self.client.rt.registry.engine.connect() as conn:
            found = [(str(job_id), created) for job_id, created in conn.execute(query)]
        if not found:
            if self._newest is None:  # none yet: every job to come is new
                self._newest = _BEFORE_ANY_JOB
            return []
        first_look = self._newest is None
        newest = found[0][1]
        new = [job_id for job_id, _ in found if job_id not in self._at_newest]
        at_newest = {job_id for job_id, created in found if created == newest}
        self._at_newest = at_newest if newest != self._newest else self._at_newest | at_newest
        self._newest = newest
        if first_look:
            return []
        return None if len(new) > _NEW_ROWS else new[::-1]

    async def _publish(self) -> None:
        """Batches of changed jobs, read once and sent to every page."""
        while True:
            await self._wake_publisher.wait()
            await asyncio.sleep(_BATCH)
            self._wake_publisher.clear()
            ids, self._changed = sorted(self._changed), set()
            if not ids:
                continue
            if not self._pages:
                self._stale = True
                continue
            if len(ids) > _EVENT_ROWS:  # (an array of thousands cancelled at once)
                self.broadcast("resync", {"why": "many changes"})
                self._stale = True
                continue
            try:
                rows = await self._offload(rows_by_id, self.client, ids, self.cache)
            except Exception:
                log.exception("reading jobs %s", ids[:5])
                continue
            self._note_running(rows)
            self.broadcast("jobs", rows)
            self._wake_watcher.set()  # a status change moves GPUs

    def _note_running(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            if row["status"] == JobStatus.RUNNING.value:
                self._running.setdefault(row["id"], (0, 0))
            else:
                self._running.pop(row["id"], None)

    # What no event announces -------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_watcher.wait(), _WATCH_INTERVAL)
            self._wake_watcher.clear()
            if not self._pages:
                continue
            try:
                await self._offload(self._look)
            except (redis.RedisError, OSError):
                pass  # the subscription notices too, and says so to the pages
            except Exception:
                log.exception("watching jobs and GPUs")

    def _look(self) -> None:
        """One look, in a worker thread; what changed is sent from the loop."""
        with self._looking:
            self._look_now()

    def _look_now(self) -> None:
        if self._stale:
            self._stale = False
            self._read_running_now()
        new = self._new_job_ids()
        if new is None:
            self._from_thread("resync", {"why": "many new jobs"})
        elif new:
            self._from_thread("jobs", rows_by_id(self.client, new, self.cache))
        moved = []
        for job_id, stamp in list(self._running.items()):
            now = self.cache.stamp(self.client, job_id)
            if now != stamp:
                self._running[job_id] = now
                moved.append(job_id)
        if moved:
            rows = rows_by_id(self.client, moved, self.cache)
            self._note_running(rows)
            self._from_thread("jobs", rows)
        if not self.redis_up:
            return
        self._send_if_changed("gpus", gpu_grid(self.client, self.cache))
        live = self.client.rt.live
        health = live.redis.hgetall(live.keys.node_health)
        self._send_if_changed("nodes", {"changed": sorted(health.items())}, send={})

    def _send_if_changed(self, kind: str, data: Any, send: Any = None) -> None:
        digest = hashlib.blake2b(json.dumps(data, sort_keys=True).encode()).hexdigest()
        if self._last.get(kind) != digest:
            self._last[kind] = digest
            self._from_thread(kind, data if send is None else send)

    def _from_thread(self, kind: str, data: Any) -> None:
        assert self._loop is not None  # (started)
        self._loop.call_soon_threadsafe(self.broadcast, kind, data)

    async def _offload(self, work: Callable[..., _T], *args: Any) -> _T:
        return await run_in_threadpool(work, *args)
