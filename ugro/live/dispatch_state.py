"""What a dispatch pass reads and writes in Redis: the single-flight lock (see
``ugro.scheduling.dispatch``) and the snapshot a pass plans on, that is the live GPUs, who
holds each one's lease and the head of the pending queue.

Besides its placements, a pass costs two round trips: the lock is taken together
with the snapshot's reads (``begin``), and let go together with the writes of the
pass's last placement (``end``), or handed to a caller that waits for it. A GPU
worker whose job ended often needs no pass at all: when its GPU is exactly where a
pass would place the head of the queue, the same script takes that job for it
(``take_for_gpu``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from secrets import token_hex
from typing import Any, NamedTuple, Protocol, cast

import redis

from ugro.live.clock import from_reply
from ugro.live.keys import Keys
from ugro.live.leases import Leases
from ugro.live.scripts import lua_source
from ugro.live.worker_info import WorkerInfo
from ugro.live.writes import Writes


class LiveAccess(Protocol):
    """What dispatch's state uses of the ``LiveState`` that holds it (a protocol,
    so that neither module imports the other)."""

    redis: redis.Redis
    keys: Keys
    leases: Leases

    def promote_due(self, now: float | None = None) -> int: ...

    def workers_from(
        self, raw: dict[str, str], max_age: float, unhealthy: dict[str, str], now: float
    ) -> list[WorkerInfo]: ...


class PendingEntry(NamedTuple):
    """A pending job as dispatch reads it from its live hash."""

    job_id: str
    gpus: int  # on each of its nodes
    node: str | None  # the node it must run on, if any
    timeout: float | None  # seconds, when it has one
    nodes: int = 1  # a gang job's nodes

    @classmethod
    def read(
        cls, job_id: str, gpus: str | None, node: str | None, timeout: str | None, nodes: str | None
    ) -> PendingEntry:
        """An entry from its live hash's fields, as Redis hands them back."""
        return cls(
            job_id,
            int(gpus or 1),
            node or None,
            float(timeout) if timeout else None,
            int(nodes or 1),
        )


class Snapshot(NamedTuple):
    """What a dispatch pass plans on, read in one round trip."""

    workers: list[WorkerInfo]  # the live GPU workers
    holders: dict[tuple[str, int], str | None]  # (node, index) -> its lease's holder, None: free
    pending: list[PendingEntry]  # the head of the queue; empty when every GPU is leased


# How long (s) what a snapshot saw of the workers is trusted by enqueue_many.
_SNAPSHOT_FRESH = 1.0
# How long (ms) a lock handed to a waiting caller lasts until it takes it up: one
# that died while it waited blocks dispatch no longer.
_HANDED_TTL = 2000


@dataclass(frozen=True)
class FreedGpu:
    """The GPU of a worker whose job just ended, as the worker asks for a pass
    (``DispatchState.take_for_gpu``), and the lease a job taken for it gets:
    ``"<job id>|<lease_token>"`` for ``lease_ttl`` s."""

    node: str
    index: int
    lease_token: str
    lease_ttl: float


@dataclass(frozen=True)
class TakenForGpu:
    """The head of the queue, taken out of it for the asking worker's GPU, whose
    lease it holds (``DispatchState.take_for_gpu``)."""

    job_id: str


@dataclass
class SeenGpus:
    """The live GPUs as one dispatch snapshot saw them."""

    at: float  # time.monotonic() of the snapshot
    epoch: str  # the live state's id then (ugro.live.keys: epoch)
    workers: list[WorkerInfo]
    # (node, index) -> the holder of its lease, None when free; in workers' order
    holders: dict[tuple[str, int], str | None]
    # fields of the workers hash, as the snapshot left it (the stale ones dropped)
    in_hash: int = 0


class DispatchState:
    """The dispatch lock and snapshots of one process's ``LiveState``."""

    def __init__(self, live: LiveAccess) -> None:
        self.live = live
        self.redis = live.redis
        self.keys = live.keys
        self._enter = self.redis.register_script(lua_source("dispatch_enter.lua"))
        self._exit = self.redis.register_script(lua_source("dispatch_exit.lua"))
        self._head = self.redis.register_script(lua_source("pending_head.lua"))
        # What the last snapshot saw (None: no live worker), for the next snapshot's
        # guess, for enqueue_many and for a submit that plans on it.
        self.last_seen: SeenGpus | None = None

    def fresh_places(self) -> tuple[list[tuple[str, int]], int] | None:
        """The GPUs the last snapshot saw and the size of the workers hash then, when
        that was within the last second; else None."""
        seen = self.last_seen
        if seen is None or time.monotonic() - seen.at >= _SNAPSHOT_FRESH:
            return None
        return list(seen.holders), seen.in_hash

    # The lock ------------------------------------------------------------------------

    def begin(
        self,
        token: str,
        max_age: float,
        limit: int,
        writes: Writes | None = None,
        ttl: float = 30.0,
        wait: float = 0.0,
    ) -> Snapshot | None:
        """Ask for a pass and, when this caller must run it (it holds the lock now),
        the snapshot it starts from; None when another holder will see the request,
        or when no job waits. One round trip: the reads are sent behind the lock's
        script, and are dropped when the lock was not had.

        ``writes`` holds the caller's writes that go first (a finished job's
        release, whose freed GPU is then no one's to see before the lock is taken);
        an error among them is raised, with the lock let go.

        With ``wait`` (seconds), a caller that finds the lock taken waits up to that
        long for the holder to hand it over as it lets go (``end``), instead of
        leaving the request: a GPU worker whose job just ended then places its own
        GPU in its own pass, and runs what it places there without a message
        (``ugro.scheduling.dispatch.WorkerGpu``). One more round trip: the wait, and
        the reads behind it. Not handed the lock in time, it leaves the request
        after all. (The wait blocks a connection: it must be shorter than the
        socket timeout.)
        """
        entered = self._enter_or_take(token, max_age, limit, writes, ttl, wait)
        if isinstance(entered, TakenForGpu):  # only an ask with a GPU takes a job
            raise AssertionError("the dispatch script took a job for no GPU")
        return entered

    def take_for_gpu(
        self,
        token: str,
        max_age: float,
        limit: int,
        gpu: FreedGpu,
        writes: Writes | None = None,
        ttl: float = 30.0,
        wait: float = 0.0,
        take_head: bool = True,
    ) -> TakenForGpu | Snapshot | None:
        """``begin`` for a GPU worker whose job just ended (``gpu``: its GPU): the
        same script first takes the head of the queue for that GPU, with its lease,
        when that GPU is exactly where a pass would place the head
        (``dispatch_enter.lua`` says when; ``tests/integration/
        test_scheduling_equivalence.py`` holds it to ``plan_placements``), and hands
        it back; no lock, no snapshot, no plan (not with ``take_head`` False: then
        only a pass places). Otherwise as ``begin``, with the
        snapshot's reads in a round trip of their own when the lock is had: the
        take is the common case, and they would be sent for nothing."""
        return self._enter_or_take(token, max_age, limit, writes, ttl, wait, gpu, take_head)

    def _enter_or_take(
        self,
        token: str,
        max_age: float,
        limit: int,
        writes: Writes | None,
        ttl: float,
        wait: float,
        gpu: FreedGpu | None = None,
        take_head: bool = True,
    ) -> TakenForGpu | Snapshot | None:
        keys = self._enter_keys()
        args: list[str | float] = [token, int(ttl * 1000), int(wait * 1000), ""]
        if gpu is not None:
            field = f"{gpu.node}:{gpu.index}"
            lease = self.keys.lease(gpu.node, gpu.index)
            keys += [lease, self.keys.workers, self.keys.unhealthy_nodes]
            args += [gpu.node, field, gpu.lease_token, int(gpu.lease_ttl * 1000)]
            # (a GPU's lease key is this prefix and its field in the workers hash)
            args += [self.keys.job(""), max_age, lease.removesuffix(field)]
            args += ["1" if take_head else "0"]
        pipe = self.redis.pipeline(transaction=False) if writes is None else writes
        first = len(pipe)
        pipe.evalsha(self._enter.sha, len(keys), *keys, *args)
        guessed = self._queue_reads(pipe, limit) if gpu is None else []
        done = pipe.execute(raise_on_error=False)
        failed = [result for result in done[:first] if isinstance(result, Exception)]
        entered, *results = done[first:]
        if failed:
            if entered == 1:
                self.end(token)
            elif isinstance(entered, list) and gpu is not None:
                # The job taken goes back to the queue at the reconciler's next tick
                # (queued in the registry, out of the live queue); its GPU is free now.
                holder = f"{entered[0]}|{gpu.lease_token}"
                self.live.leases.release(gpu.node, [gpu.index], holder)
            raise failed[0]
        if isinstance(entered, redis.exceptions.NoScriptError):  # a restarted Redis
            entered = self._enter(keys=keys, args=args)
            results = []
        elif isinstance(entered, Exception):
            raise entered
        if isinstance(entered, list):
            return TakenForGpu(str(entered[0]))
        if isinstance(entered, str):  # waiting to be handed the lock
            return self._handed(token, entered, wait, ttl, max_age, limit)
        if not entered:
            return None
        if not results:
            return self.snapshot(max_age, limit)
        return self._snapshot_from(results, guessed, max_age, limit)

    def _handed(
        self, token: str, entry: str, wait: float, ttl: float, max_age: float, limit: int
    ) -> Snapshot | None:
        """Wait for the lock to be handed over (``begin``'s ``wait``); the snapshot
        when this caller holds it then, else None (its request is left). The same
        script as ``begin``'s, given the entry: handed the lock, or else taking it
        or leaving the request as any caller does."""
        keys = self._enter_keys()
        args: list[str | float] = [token, int(ttl * 1000), 0, entry]
        # One round trip: the wait blocks this connection, and the commands behind it
        # run as it ends.
        pipe = self.redis.pipeline(transaction=False)
        pipe.blpop([self.keys.dispatch_wake(token)], timeout=wait)
        pipe.evalsha(self._enter.sha, len(keys), *keys, *args)
        guessed = self._queue_reads(pipe, limit)
        _, settled, *results = pipe.execute(raise_on_error=False)
        if isinstance(settled, redis.exceptions.NoScriptError):
            if not self._enter(keys=keys, args=args):
                return None
            return self.snapshot(max_age, limit)
        if isinstance(settled, Exception):
            raise settled
        if not settled:
            return None
        return self._snapshot_from(results, guessed, max_age, limit)

    def _enter_keys(self) -> list[str]:
        """The keys of ``dispatch_enter.lua``."""
        return [
            self.keys.dispatch_dirty,
            self.keys.dispatch_lock,
            self.keys.pending,
            self.keys.delayed,
            self.keys.dispatch_waiting,
        ]

    def ask(self) -> None:
        """Ask whoever holds the lock for one more pass."""
        self.redis.set(self.keys.dispatch_dirty, 1)

    def end(self, token: str, writes: Writes | None = None, ttl: float = 30.0) -> bool:
        """After a pass: True when another is asked for (the lock is kept), else the
        lock is let go, or handed to the first caller waiting for it (``begin``'s
        ``wait``). ``writes`` carries the pass's last writes: they go in the same
        round trip, before the lock."""
        keys = [self.keys.dispatch_dirty, self.keys.dispatch_lock, self.keys.dispatch_waiting]
        args: list[str | int] = [token, int(ttl * 1000), self.keys.dispatch_wake(""), _HANDED_TTL]
        if writes is None or not len(writes):
            return bool(self._exit(keys=keys, args=args))
        writes.evalsha(self._exit.sha, len(keys), *keys, *args)
        *done, again = writes.execute(raise_on_error=False)
        if isinstance(again, redis.exceptions.NoScriptError):
            again = self._exit(keys=keys, args=args)
        failed = [result for result in (*done, again) if isinstance(result, Exception)]
        if failed:
            raise failed[0]
        return bool(again)

    # The snapshot --------------------------------------------------------------------

    def snapshot(self, max_age: float, limit: int = 64) -> Snapshot:
        """What a pass needs: the live workers, who holds each of their GPUs' leases
        and, when some GPU is free, the first ``limit`` pending jobs.

        One round trip, unless the live workers changed since the last snapshot.
        ``limit`` bounds the work of a pass whatever the queue's length: jobs further
        back wait for the ones before them to be placed (or to reserve their node).
        """
        pipe = self.redis.pipeline(transaction=False)
        guessed = self._queue_reads(pipe, limit)
        return self._snapshot_from(pipe.execute(raise_on_error=False), guessed, max_age, limit)

    def head(self, limit: int) -> list[PendingEntry]:
        """The first ``limit`` pending jobs, with each one's fields: a pass that has
        its snapshot's workers and leases and wants a longer window of the queue."""
        head = self._head(keys=[self.keys.pending], args=[limit, self.keys.job("")])
        return [
            PendingEntry.read(str(job_id), *fields)
            for job_id, *fields in zip(*[iter(head)] * 5, strict=True)
        ]

    def _queue_reads(self, pipe: Writes, limit: int) -> list[tuple[str, int]]:
        pipe.hgetall(self.keys.workers)
        pipe.evalsha(self._head.sha, 1, self.keys.pending, limit, self.keys.job(""))
        # The first delayed job, and Redis's clock to tell whether it is due and
        # whose workers are live: every host writes on that one (ugro.live.clock).
        pipe.zrange(self.keys.delayed, 0, 0, withscores=True)
        pipe.hgetall(self.keys.unhealthy_nodes)
        pipe.set(self.keys.epoch, token_hex(8), nx=True)
        pipe.get(self.keys.epoch)
        pipe.time()
        # The leases of the GPUs seen last time, in the same round trip: the live
        # workers seldom change between passes.
        guessed = [] if self.last_seen is None else list(self.last_seen.holders)
        if guessed:
            pipe.mget([self.keys.lease(n, i) for n, i in guessed])
        return guessed

    def _snapshot_from(
        self, results: list[Any], guessed: list[tuple[str, int]], max_age: float, limit: int
    ) -> Snapshot:
        raw_workers, head, first_delayed, unhealthy, _, epoch, clock, *leased = results
        for result in (raw_workers, first_delayed, unhealthy, epoch, clock, *leased):
            if isinstance(result, Exception):
                raise result
        now = from_reply(clock)
        due = bool(first_delayed) and first_delayed[0][1] <= now
        if due:
            self.live.promote_due(now)
        if due or isinstance(head, redis.exceptions.NoScriptError):
            head = self._head(keys=[self.keys.pending], args=[limit, self.keys.job("")])
        elif isinstance(head, Exception):
            raise head
        seen_at = time.monotonic()
        workers = self.live.workers_from(raw_workers, max_age, unhealthy, now)
        places = [(w.node, w.index) for w in workers]
        if not workers:
            self.last_seen = None
            return Snapshot([], {}, [])
        if places != guessed:
            leased = [self.redis.mget([self.keys.lease(n, i) for n, i in places])]
        leases = cast(list[str | None], leased[0])
        holders = dict(zip(places, leases, strict=True))
        self.last_seen = SeenGpus(seen_at, epoch, workers, holders, len(workers))
        if all(holder is not None for holder in leases):
            return Snapshot(workers, holders, [])
        pending = [
            PendingEntry.read(str(job_id), *fields)
            for job_id, *fields in zip(*[iter(head)] * 5, strict=True)
        ]
        return Snapshot(workers, holders, pending)
