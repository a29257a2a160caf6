"""Live state in Redis: the pending queue, job hashes, workers, heartbeats; the
GPU leases are ``ugro.live.leases`` (``LiveState.leases``), and the dispatch lock and
snapshots ``ugro.live.dispatch_state`` (``LiveState.dispatch``).

Every key comes from ``ugro.live.keys``; every multi-key change that must be atomic is a
Lua script in ``ugro/live/lua/``.
"""

from __future__ import annotations

import json
import time
from typing import Any, NamedTuple, cast

import redis

from ugro.live.clock import from_reply, server_time
from ugro.live.command_list import CommandList
from ugro.live.connection import connect
from ugro.live.dispatch_state import DispatchState, PendingEntry
from ugro.live.job_ends import RunningEnds
from ugro.live.job_message import JobMessage
from ugro.live.keys import Keys
from ugro.live.leases import Leases
from ugro.live.preemption import PreemptionState
from ugro.live.scripts import lua_source
from ugro.live.secret_box import SecretBox
from ugro.live.stops import StopRequests
from ugro.live.worker_info import WorkerInfo, node_block
from ugro.live.writes import Writes
from ugro.settings import Settings

# Pending score: higher priority first, then submission order. |priority| <= 1000
# and the sequence stays below 1e10, so the score stays exact in a double.
_PRIORITY_WEIGHT = 10_000_000_000
# The live hash of a finished job is kept this long for `ugro wait` and the like.
_ENDED_JOB_TTL = 86_400


class QueuedEntry(NamedTuple):
    """A job to queue, with what placement needs to know of it."""

    job_id: str
    priority: int
    gpus: int
    node: str | None = None  # the node it must run on, if any
    timeout: float | None = None  # seconds, when it has one
    ready_at: float | None = None  # unix time its retry backoff ends; None: now
    nodes: int = 1  # a gang job's nodes


class LiveState:
    """Typed access to ugro's keys in one Redis server."""

    def __init__(self, client: redis.Redis, keys: Keys, box: SecretBox | None = None) -> None:
        self.redis = client
        self.keys = keys
        self._box = box
        self.leases = Leases(client, keys)
        self.stops = StopRequests(client, keys)
        self.preemption = PreemptionState(client, keys, _PRIORITY_WEIGHT)
        self.ends = RunningEnds(client, keys)
        self._enqueue = client.register_script(lua_source("enqueue.lua"))
        self._run_commands = client.register_script(lua_source("run_commands.lua"))
        self.dispatch = DispatchState(self)
        # Each presence record's text as last parsed: a pass reads every GPU's, and
        # most have not changed since the last pass (a heartbeat rewrites ``seen``).
        self._parsed: dict[str, dict[str, Any]] = {}

    @classmethod
    def open(cls, settings: Settings, wait_out_restarts: bool = False) -> LiveState:
        return cls(
            connect(settings, wait_out_restarts=wait_out_restarts),
            Keys(settings.redis_prefix),
            SecretBox(settings),
        )

    @property
    def box(self) -> SecretBox:
        """What seals the jobs' secret values (``ugro.live.secret_box``)."""
        if self._box is None:
            raise RuntimeError("a LiveState made without settings keeps no secrets")
        return self._box

    # Pending queue ---------------------------------------------------------------

    def enqueue(
        self,
        job_id: str,
        priority: int,
        gpus: int,
        node: str | None,
        timeout: float | None = None,
        ready_at: float | None = None,
        nodes: int = 1,
    ) -> None:
        """Put a job in the pending queue with what placement needs to know, or, with
        ``ready_at``, among the delayed jobs until then (a retry backoff)."""
        self.enqueue_many([QueuedEntry(job_id, priority, gpus, node, timeout, ready_at, nodes)])

    def enqueue_many(
        self, jobs: list[QueuedEntry], watch: bool = False, window: int | None = None
    ) -> bool:
        """``enqueue`` for several jobs, in order, in one round trip.

        With ``watch``, also says whether a dispatch pass could place one of them now.
        No (False) when, at the very moment they were queued, every GPU that a
        dispatch snapshot saw within the last second was leased and no worker had
        come or gone since: then whoever frees a GPU runs the next pass and finds
        them; or when the first of them in the queue's order stands at ``window`` or
        further back, beyond what a pass reads (a long queue's newest job waits for
        the ones before it). Yes (True) in every other case, and without ``watch``.
        """
        if not jobs:
            return False
        keys = [self.keys.sequence, self.keys.pending, self.keys.delayed]
        args: list[Any] = [_PRIORITY_WEIGHT, self.keys.events_channel]
        for job_id, priority, gpus, node, timeout, ready_at, nodes in jobs:
            keys.append(self.keys.job(job_id))
            args += [job_id, priority, gpus, node or "", timeout or "", ready_at or "", nodes]
        seen = self.dispatch.fresh_places() if watch else None
        if seen is None:
            self._enqueue(keys=keys, args=args)
            return True
        places, workers_seen = seen
        # The first of them in the queue's order: the highest priority, then the
        # first queued (the sequence grows in the batch's order).
        ready = [job for job in jobs if not job.ready_at]
        first = max(ready, key=lambda job: job.priority, default=None)
        # One transaction: the leases are read at the instant the jobs are queued.
        pipe = self.redis.pipeline(transaction=True)
        pipe.evalsha(self._enqueue.sha, len(keys), *keys, *args)
        pipe.mget([self.keys.lease(n, i) for n, i in places])
        pipe.hlen(self.keys.workers)
        pipe.zrank(self.keys.pending, first.job_id if first else "")
        queued, leases, count, rank = pipe.execute(raise_on_error=False)
        if isinstance(queued, redis.exceptions.NoScriptError):  # a restarted Redis
            self._enqueue(keys=keys, args=args)
            return True
        for result in (queued, leases, count, rank):
            if isinstance(result, Exception):
                raise result
        if window is not None and rank is not None and rank >= window:
            return False
        return count != workers_seen or any(lease is None for lease in leases)

    def promote_due(self, now: float | None = None) -> int:
        """Move delayed jobs whose backoff is over into the pending queue (``now``:
        by Redis's clock, read here when not given)."""
        now = server_time(self.redis) if now is None else now
        due = cast(list[str], self.redis.zrangebyscore(self.keys.delayed, "-inf", now))
        for job_id in due:
            fields = cast(
                list[str | None],
                self.redis.hmget(
                    self.keys.job(job_id), ["priority", "gpus", "node", "timeout", "nodes"]
                ),
            )
            priority, *placed = fields
            entry = PendingEntry.read(job_id, *placed)
            self.enqueue(
                job_id, int(priority or 0), entry.gpus, entry.node, entry.timeout, None, entry.nodes
            )
            self.redis.zrem(self.keys.delayed, job_id)
        return len(due)

    def queue_position(self, job_id: str) -> tuple[int | None, float | None]:
        """(jobs ahead of it in the pending queue, seconds of backoff left)."""
        rank = self.redis.zrank(self.keys.pending, job_id)
        ready_at = self.redis.zscore(self.keys.delayed, job_id)
        left = None if ready_at is None else float(ready_at) - server_time(self.redis)
        return (None if rank is None else int(cast(int, rank))), left

    def queued_ids(self) -> set[str]:
        """Every job id in the pending queue or waiting out a backoff."""
        pending = cast(list[str], self.redis.zrange(self.keys.pending, 0, -1))
        delayed = cast(list[str], self.redis.zrange(self.keys.delayed, 0, -1))
        return set(pending) | set(delayed)

    @property
    def priority_weight(self) -> int:
        """A pending score is ``-priority * priority_weight + sequence``."""
        return _PRIORITY_WEIGHT

    def job_shapes(self, job_ids: list[str]) -> dict[str, tuple[int, int, float | None]]:
        """Each queued job's GPUs, nodes and timeout, as its live hash holds them."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(self.keys.job(job_id), ["gpus", "nodes", "timeout"])
        shapes = {}
        for job_id, (gpus, nodes, timeout) in zip(job_ids, pipe.execute(), strict=True):
            if gpus:
                shapes[job_id] = (int(gpus), int(nodes or 1), float(timeout) if timeout else None)
        return shapes

    def pending(self, limit: int = 500) -> list[PendingEntry]:
        """The first ``limit`` pending jobs in order: (job_id, gpus, node, timeout)."""
        ids = cast(list[str], self.redis.zrange(self.keys.pending, 0, limit - 1))
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(self.keys.job(job_id), ["gpus", "node", "timeout", "nodes"])
        return [
            PendingEntry.read(job_id, *fields)
            for job_id, fields in zip(ids, pipe.execute(), strict=True)
        ]

    def dequeue(self, job_id: str) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(self.keys.pending, job_id)
        pipe.zrem(self.keys.delayed, job_id)
        pipe.execute()

    # Job hashes and events ---------------------------------------------------------

    def set_job(self, job_id: str, **fields: Any) -> None:
        """Update the live hash of a job and announce its status on the channel.

        A job whose status is no longer ``queued`` leaves the queues in the same step.
        """
        pipe = self.redis.pipeline(transaction=True)
        self.queue_set_job(pipe, job_id, fields)
        pipe.execute()

    def mark_running(
        self,
        job_id: str,
        ttl: float,
        beat: dict[str, Any],
        lease: tuple[str, list[int], str, int],
        **fields: Any,
    ) -> bool:
        """For a job its worker just started, in one round trip: its leases (``lease``:
        node, GPUs, holder, attempt) renewed into the running window (one that ran
        out is taken back, as a heartbeat does), ``set_job`` and its first heartbeat
        (``beat``, ``ttl``). Returns whether the leases are the job's."""
        node, gpus, holder, attempt = lease
        pipe = self.redis.pipeline(transaction=True)
        self.leases.queue_renew(pipe, node, gpus, holder, ttl, attempt)
        self.queue_set_job(pipe, job_id, fields)
        self.queue_heartbeat(pipe, job_id, ttl, beat)
        renewed, *rest = pipe.execute(raise_on_error=False)
        for result in rest:
            if isinstance(result, Exception):
                raise result
        if isinstance(renewed, redis.exceptions.NoScriptError):  # a restarted Redis
            return self.leases.renew(node, gpus, holder, ttl, attempt=attempt)
        if isinstance(renewed, Exception):
            raise renewed
        return int(renewed) == len(gpus)

    def release_and_set_job(
        self,
        node: str,
        gpus: list[int],
        holder: str,
        job_id: str,
        writes: Writes | None = None,
        **fields: Any,
    ) -> None:
        """``leases.release`` and then ``set_job``, in one round trip (an attempt's
        end); with ``writes``, as its commands, for the caller to run."""
        if writes is not None:
            self.leases.queue_release(writes, node, gpus, holder, by_source=True)
            self.queue_set_job(writes, job_id, fields)
            return
        pipe = self.redis.pipeline(transaction=True)
        self.leases.queue_release(pipe, node, gpus, holder)
        self.queue_set_job(pipe, job_id, fields)
        first, *rest = pipe.execute(raise_on_error=False)
        for error in rest:
            if isinstance(error, Exception):
                raise error
        if isinstance(first, redis.exceptions.NoScriptError):
            self.leases.release(node, gpus, holder)
        elif isinstance(first, Exception):
            raise first

    def queue_set_job(
        self, pipe: Writes | CommandList, job_id: str, fields: dict[str, Any]
    ) -> None:
        """``set_job`` as commands of ``pipe``, for the caller to execute."""
        mapping: dict[Any, Any] = {
            k: ("" if v is None else json.dumps(v) if isinstance(v, list) else v)
            for k, v in fields.items()
        }
        pipe.hset(self.keys.job(job_id), mapping=mapping)
        status = fields.get("status")
        if status in ("finished", "failed", "cancelled"):
            pipe.expire(self.keys.job(job_id), _ENDED_JOB_TTL)
            pipe.delete(self.keys.job_secrets(job_id), self.keys.heartbeat(job_id))
        if status in ("queued", "lost", "finished", "failed", "cancelled"):
            # A stop request was for the attempt that just ended, not the next one.
            pipe.delete(self.keys.cancel(job_id))
        if "status" in fields:
            if fields["status"] != "queued":
                pipe.zrem(self.keys.pending, job_id)
                pipe.zrem(self.keys.delayed, job_id)
            pipe.publish(self.keys.events_channel, f"{job_id} {fields['status']}")

    def job(self, job_id: str) -> dict[str, str]:
        return cast(dict[str, str], self.redis.hgetall(self.keys.job(job_id)))

    def forget_job(self, job_id: str) -> None:
        """Remove every key of a job (a rolled-back submission)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(self.keys.pending, job_id)
        pipe.zrem(self.keys.delayed, job_id)
        pipe.delete(self.keys.job(job_id), self.keys.job_secrets(job_id))
        pipe.execute()

    def store_secrets(self, job_id: str, secrets: dict[str, str]) -> None:
        if secrets:
            self.redis.set(self.keys.job_secrets(job_id), self.box.seal(secrets))

    def secrets(self, job_id: str) -> dict[str, str]:
        """A job's secret env values, opened.

        Raises:
            SecretsUnreadable: this node's key is not the submitter's.
        """
        sealed = self.redis.get(self.keys.job_secrets(job_id))
        return self.box.open(cast(str, sealed)) if sealed else {}

    def heartbeat(self, job_id: str, ttl: float, **info: Any) -> None:
        self.queue_heartbeat(self.redis, job_id, ttl, info)

    def queue_heartbeat(
        self, pipe: Writes | redis.Redis, job_id: str, ttl: float, info: dict[str, Any]
    ) -> None:
        value = json.dumps({"ts": time.time(), **info})
        pipe.set(self.keys.heartbeat(job_id), value, px=int(ttl * 1000))

    def subscribe(self) -> Any:
        """A pub/sub connection listening to the status events channel."""
        # Untyped before redis 8.2 and typed from it: the ignore holds on both.
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call, unused-ignore]
        pubsub.subscribe(self.keys.events_channel)
        return pubsub

    # Workers -----------------------------------------------------------------------

    def register_worker(
        self,
        node: str,
        index: int,
        pid: int,
        host: str,
        blocked: str | None = None,
        gpu: dict[str, Any] | None = None,
    ) -> None:
        # Seen by Redis's clock: dispatch on another host judges it by that one.
        seen = server_time(self.redis)
        info = {"pid": pid, "host": host, "seen": seen, "blocked": blocked, "gpu": gpu}
        self.redis.hset(self.keys.workers, f"{node}:{index}", json.dumps(info))

    def unregister_worker(self, node: str, index: int) -> None:
        self.redis.hdel(self.keys.workers, f"{node}:{index}")

    def workers(self, max_age: float) -> list[WorkerInfo]:
        """Live GPU workers; fields older than ``max_age`` are dropped as dead."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.workers)
        pipe.hgetall(self.keys.unhealthy_nodes)
        pipe.time()
        raw, unhealthy, clock = pipe.execute()
        return self.workers_from(raw, max_age, unhealthy, from_reply(clock))

    def workers_from(
        self, raw: dict[str, str], max_age: float, unhealthy: dict[str, str], now: float
    ) -> list[WorkerInfo]:
        """The workers of the ``workers`` hash (``raw``) seen within ``max_age`` of
        ``now``, Redis's clock, on which they announce themselves. A GPU of a node
        the health sweep marked unhealthy is blocked with the node's reason, so
        dispatch skips it."""
        found, dead = [], []
        if len(self._parsed) > 2 * len(raw) + 64:
            self._parsed.clear()  # (records of workers gone, or of an older text)
        for field, value in raw.items():
            node, _, index = field.rpartition(":")
            info = self._parsed.get(value)
            if info is None:
                info = self._parsed[value] = json.loads(value)
            if now - float(info["seen"]) > max_age:
                dead.append(field)
                continue
            found.append(
                WorkerInfo(
                    node,
                    int(index),
                    int(info["pid"]),
                    info["host"],
                    info["seen"],
                    info.get("blocked") or node_block(unhealthy.get(node)),
                    info.get("gpu"),
                )
            )
        if dead:
            self.redis.hdel(self.keys.workers, *dead)
        return sorted(found, key=lambda w: (w.node, w.index))

    def placed_new(
        self, job_id: str, secrets: dict[str, str], message: JobMessage, **fields: Any
    ) -> None:
        """A job placed the moment it was accepted, in one step: its secrets, its
        live hash (what a queued one's holds, and its placement), its status
        announced and, last, its message to its worker (``ugro.live.job_message``). A
        script, not a MULTI: should a write fail, the message is not sent."""
        commands = self.placed_new_commands(job_id, secrets, message, **fields)
        self._run_commands(keys=[], args=[json.dumps(commands)])

    def placed_new_commands(
        self, job_id: str, secrets: dict[str, str], message: JobMessage, **fields: Any
    ) -> list[list[str]]:
        """``placed_new``'s commands, for the script that leases the job's GPUs to
        run once it has them (``Leases.acquire_first``)."""
        commands = CommandList()
        self._queue_placed_new(commands, job_id, secrets, message, fields)
        return commands.commands

    def _queue_placed_new(
        self,
        pipe: CommandList,
        job_id: str,
        secrets: dict[str, str],
        message: JobMessage,
        fields: dict[str, Any],
    ) -> None:
        if secrets:
            pipe.set(self.keys.job_secrets(job_id), self.box.seal(secrets))
        self.queue_set_job(pipe, job_id, fields)
        pipe.lpush(message.key, message.payload)
