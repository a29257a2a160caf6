"""GPU leases in Redis: which job holds each GPU, the fence of an attempt declared
lost, and when a job was first seen without its lease.

A lease's value is ``"<job_id>|<token>"``, with a TTL its worker's heartbeat renews
(``ugro.live.keys``). A change to several leases is a Lua script in ``ugro/live/lua/``, so a
placement's leases are taken all at once or not at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal, cast

import redis

from ugro.live.clock import server_time
from ugro.live.keys import Keys
from ugro.live.scripts import lua_source
from ugro.live.writes import Writes

#: What ``Leases.acquire_first`` found.
FirstOutcome = Literal["leased", "taken", "waiting", "stale"]
_FIRST_OUTCOMES: dict[int, FirstOutcome] = {1: "leased", -1: "waiting", -2: "stale"}


@dataclass(frozen=True)
class PlannedOn:
    """What a lease at submit was planned on (``Leases.acquire_first``)."""

    epoch: str  # the live state's id (ugro.live.keys: epoch)
    workers: int  # fields of the workers hash
    holders: dict[tuple[str, int], str | None]  # each GPU seen -> its lease's holder


class Leases:
    """The GPU leases in one Redis server."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._acquire = client.register_script(lua_source("lease_acquire.lua"))
        self._at_submit = client.register_script(lua_source("lease_at_submit.lua"))
        self._renew = client.register_script(lua_source("lease_renew.lua"))
        # (its source too: a pipeline whose results go unread sends it by source)
        self._release_source = lua_source("lease_release.lua")
        self._release = client.register_script(self._release_source)
        self._release_job = client.register_script(lua_source("lease_release_job.lua"))

    def _lease_keys(self, node: str, gpus: list[int]) -> list[str]:
        return [self.keys.lease(node, i) for i in gpus]

    def acquire(self, node: str, gpus: list[int], holder: str, ttl: float) -> bool:
        """Take all the leases of a placement atomically, or none."""
        keys = self._lease_keys(node, gpus)
        return bool(self._acquire(keys=keys, args=[holder, int(ttl * 1000)]))

    def acquire_first(
        self,
        node: str,
        gpus: list[int],
        holder: str,
        ttl: float,
        planned_on: PlannedOn,
        then: list[list[str]] | None = None,
    ) -> tuple[FirstOutcome, dict[tuple[str, int], str | None] | None]:
        """``acquire`` for a job that goes before no other: only while no job waits
        in the queue (nor a delayed one is due) and the live GPUs are as
        ``planned_on`` saw them. Returns "leased"; "taken", with who holds each GPU
        seen now, when one was taken or freed since; "waiting" (a job waits); or
        "stale" (the live state or its workers changed). ``then``: commands run
        with the leases taken, in the same script."""
        seen = list(planned_on.holders)
        keys = [self.keys.epoch, self.keys.pending, self.keys.delayed, self.keys.workers]
        keys += self._lease_keys(node, gpus) + [self.keys.lease(n, i) for n, i in seen]
        leased = "".join("0" if h is None else "1" for h in planned_on.holders.values())
        args: list[str | int | float] = [holder, int(ttl * 1000), planned_on.epoch]
        args += [len(gpus), json.dumps(then) if then else "", planned_on.workers, leased]
        outcome, *holders = self._at_submit(keys=keys, args=args)
        if int(outcome) == 0:
            return "taken", dict(zip(seen, holders, strict=True))
        return _FIRST_OUTCOMES[int(outcome)], None

    def renew(self, node: str, gpus: list[int], holder: str, ttl: float, attempt: int = 0) -> bool:
        """Extend every lease of a holder; False if it lost any (it must stop).

        With ``attempt`` (a running job's heartbeat), a lease that vanished (Redis
        was wiped) is taken again, unless that attempt was declared lost.
        """
        keys = self._renew_keys(node, gpus, holder)
        held = int(self._renew(keys=keys, args=[holder, int(ttl * 1000), attempt]))
        return held == len(gpus)

    def _renew_keys(self, node: str, gpus: list[int], holder: str) -> list[str]:
        """The placement's lease keys, then the fence of the holder's job."""
        return [*self._lease_keys(node, gpus), self.keys.fence(holder.partition("|")[0])]

    def queue_renew(
        self, pipe: Writes, node: str, gpus: list[int], holder: str, ttl: float, attempt: int = 0
    ) -> None:
        """``renew`` as one command of ``pipe``; its result is how many leases are
        held, or NoScriptError (see ``queue_release``)."""
        keys = self._renew_keys(node, gpus, holder)
        pipe.evalsha(self._renew.sha, len(keys), *keys, holder, int(ttl * 1000), attempt)

    def release(self, node: str, gpus: list[int], holder: str) -> int:
        return int(self._release(keys=self._lease_keys(node, gpus), args=[holder]))

    def queue_release(
        self, pipe: Writes, node: str, gpus: list[int], holder: str, by_source: bool = False
    ) -> None:
        """``release`` as one command of ``pipe``. Its result is NoScriptError when
        Redis lost the script (a restart): then call ``release``, which loads it.
        With ``by_source``, the script goes with its source, which cannot be lost:
        for a pipeline whose caller does not look at each result."""
        keys = self._lease_keys(node, gpus)
        if by_source:
            pipe.eval(self._release_source, len(keys), *keys, holder)
            return
        # A script in a pipeline by its digest: redis-py would ask whether it is
        # loaded first, a round trip of its own. Were it not (a restarted Redis),
        # that command alone fails and is done again the ordinary way.
        pipe.evalsha(self._release.sha, len(keys), *keys, holder)

    def release_job(self, job_id: str, node: str, gpus: list[int]) -> int:
        """Release the leases ``job_id`` holds on these GPUs, whatever its token."""
        keys = self._lease_keys(node, gpus)
        return int(self._release_job(keys=keys, args=[f"{job_id}|"])) if keys else 0

    def holds_lease(self, job_id: str, node: str, gpus: list[int]) -> bool:
        """Whether ``job_id`` holds at least one of these GPUs' leases."""
        holders = self.lease_holders(node, gpus).values()
        return any(h is not None and h.startswith(f"{job_id}|") for h in holders)

    def lease_holders(self, node: str, gpus: list[int]) -> dict[int, str | None]:
        """Who holds each GPU (``"<job_id>|<token>"``), or None when it is free."""
        if not gpus:
            return {}
        values = self.redis.mget(self._lease_keys(node, gpus))
        return dict(zip(gpus, values, strict=True))  # type: ignore[arg-type]

    def fence(self, job_id: str, attempt: int) -> None:
        """Declare an attempt lost: its worker may not re-take its leases."""
        self.redis.set(self.keys.fence(job_id), attempt, ex=7 * 86400)

    def suspect_since(self, job_id: str, now: float) -> float:
        """When the job was first seen without its lease (now, if this is the first);
        ``now`` by Redis's clock (``ugro.live.clock``), as every reconciler's is."""
        key = self.keys.suspect(job_id)
        self.redis.set(key, now, nx=True, ex=3600)
        return float(cast(str, self.redis.get(key)) or now)

    def watched_for(self, gap: float) -> float:
        """How long (s, by Redis's clock) reconcile passes have watched the leases
        without a gap longer than ``gap``, this pass counted: a lease missing after
        that long ran out for good, while one missing just after a wipe, a restart
        or an outage may be taken again by a worker that is alive. (Called under the
        reconcile lock: one pass at a time.)"""
        now = server_time(self.redis)
        last, since = cast(
            list[str | None], self.redis.hmget(self.keys.reconciled, "last", "since")
        )
        begun = now if last is None or since is None or now - float(last) > gap else float(since)
        self.redis.hset(self.keys.reconciled, mapping={"last": now, "since": begun})
        return now - begun

    def clear_suspect(self, job_id: str) -> None:
        self.redis.delete(self.keys.suspect(job_id))
