"""The simulated cluster of W6 (``bench.control_plane``): GPUs announced by their
presence records only, with an embedded Redis and a registry of their own, and
the jobs run on them as their workers would run them."""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ugro import Client, JobSpec, Settings
from ugro.execution.attempt_end import end_line, record_end
from ugro.execution.runner import ExitInfo
from ugro.gpus.fake import FakeBackend
from ugro.jobs.lifecycle import ExitReason, JobStatus
from ugro.live.clock import server_time
from ugro.ops.redis_server import EmbeddedRedis
from ugro.registry.models import JobRow, utcnow
from ugro.runtime import Runtime, claim_values, gpu_json
from ugro.scheduling.dispatch import WorkerGpu, dispatch_pending

USERS = ("ada", "grace", "edsger", "barbara")
#: GPUs of a queued job, and how often each comes.
JOB_GPUS = (1, 2, 4, 8)
JOB_WEIGHTS = (4, 3, 2, 1)
TIMEOUTS = (3600.0, 4 * 3600.0, 24 * 3600.0, None)
#: Jobs a ``submit_many`` call queues while filling.
BATCH = 500


@dataclass(frozen=True)
class Shape:
    nodes: int
    gpus_per_node: int

    @property
    def job_gpus(self) -> tuple[int, ...]:
        """The jobs' sizes (GPUs) that fit on a node."""
        return tuple(g for g in JOB_GPUS if g <= self.gpus_per_node)

    @property
    def places(self) -> list[tuple[str, int]]:
        """Every GPU, as (node, index)."""
        return [(f"w6-{n:03d}", i) for n in range(self.nodes) for i in range(self.gpus_per_node)]


@dataclass
class RunningJob:
    """A job running on simulated GPUs: its row as claimed, and its lease."""

    row: JobRow
    token: str
    node: str
    gpus: list[int]

    @property
    def holder(self) -> str:
        return f"{self.row.id}|{self.token}"


class SimulatedCluster:
    """GPUs announced by their presence records only, an embedded Redis and a
    registry of their own; what is placed on them is run (that is, claimed, then
    ended) by the benchmark as their workers would."""

    def __init__(self, root: Path, database_url: str | None, shape: Shape, seed: int) -> None:
        self.settings = Settings(
            data_dir=root,
            database_url=database_url,
            redis_url=None,
            redis_prefix="ugro",
            node_name="w6-bench",
            user=USERS[0],
        )
        self.shape = shape
        self.rng = random.Random(seed)
        self.redis_server = EmbeddedRedis(self.settings)
        self.running: dict[str, RunningJob] = {}
        self.clients: dict[str, Client] = {}
        self._rt: Runtime | None = None
        self._refreshed = float("-inf")
        self._next_user = 0
        self._named = 0
        reading = FakeBackend(shape.gpus_per_node).devices()
        self._readings = [device.to_dict() for device in reading]

    @property
    def rt(self) -> Runtime:
        """The runtime of the simulated workers (and beat): not a submitter's."""
        assert self._rt is not None, "start the cluster first"
        return self._rt

    def start(self) -> None:
        self.redis_server.start()
        self._rt = Runtime.open(self.settings)
        for user in USERS:
            self.clients[user] = Client(self.settings.model_copy(update={"user": user}))
        self.keep_alive(force=True)

    def stop(self) -> None:
        for client in self.clients.values():
            with contextlib.suppress(Exception):  # (the server goes all the same)
                client.close()
        if self._rt is not None:
            with contextlib.suppress(Exception):
                self._rt.close()
        self.redis_server.stop()

    # What workers would keep writing -------------------------------------------------

    def keep_alive(self, force: bool = False) -> None:
        """Every GPU's presence record, and every running job's lease renewal and
        heartbeat, once a third of the shorter of their times to live has passed."""
        every = min(self.settings.worker_ttl, self.settings.lease_ttl) / 3
        if not force and time.monotonic() - self._refreshed < every:
            return
        live = self.rt.live
        # ``LiveState.register_worker``'s record, for every GPU in one write.
        worker = {"pid": os.getpid(), "host": socket.gethostname(), "blocked": None}
        seen = server_time(live.redis)
        records: dict[Any, Any] = {
            f"{node}:{index}": json.dumps({**worker, "seen": seen, "gpu": self._readings[index]})
            for node, index in self.shape.places
        }
        live.redis.hset(live.keys.workers, mapping=records)
        # Each running job's heartbeat, as its worker's (``ugro.execution.attempt``).
        ttl, jobs = self.settings.lease_ttl, list(self.running.values())
        pipe = live.redis.pipeline(transaction=False)
        for job in jobs:
            attempt = job.row.attempt
            live.leases.queue_renew(pipe, job.node, job.gpus, job.holder, ttl, attempt)
            live.queue_heartbeat(pipe, job.row.id, ttl, {"node": job.node, "attempt": attempt})
        for job, held in zip(jobs, pipe.execute(raise_on_error=False)[::2], strict=True):
            if isinstance(held, Exception):  # (the script not loaded yet)
                renewed = live.leases.renew(job.node, job.gpus, job.holder, ttl, job.row.attempt)
            else:
                renewed = int(held) == len(job.gpus)
            if not renewed:
                raise RuntimeError(f"job {job.row.id} lost its lease on {job.node}")
        self._refreshed = time.monotonic()

    # Jobs ------------------------------------------------------------------------------

    def spec(self, gpus: int | None = None, timeout: float | None = None) -> JobSpec:
        """A job of the mix (``gpus`` and ``timeout`` drawn when not given)."""
        if gpus is None:
            sizes = self.shape.job_gpus
            gpus = self.rng.choices(sizes, JOB_WEIGHTS[: len(sizes)])[0]
            timeout = self.rng.choice(TIMEOUTS)
        # A name of its own: an id is the name and 32 random bits, and among 50,000
        # jobs of one name two would likely draw the same.
        self._named += 1
        name = f"w6-{gpus}gpu-{self._named}"
        return JobSpec(name=name, command=["true"], gpus=gpus, timeout=timeout)

    def submit_in_batches(self, specs: list[JobSpec]) -> None:
        """``specs`` queued by the users in turn, ``BATCH`` at a time."""
        for start in range(0, len(specs), BATCH):
            user = USERS[self._next_user % len(USERS)]
            self._next_user += 1
            self.clients[user].submit_many(specs[start : start + BATCH])
            self.keep_alive()

    def queued(self) -> int:
        live = self.rt.live
        return int(live.redis.zcard(live.keys.pending))

    def free_gpus(self) -> int:
        """GPUs whose lease no job holds."""
        live = self.rt.live
        leases = live.redis.mget([live.keys.lease(n, i) for n, i in self.shape.places])
        return sum(lease is None for lease in leases)

    def fill_gpus(self) -> None:
        """A job on every GPU: each node's GPUs split at random into jobs of the mix,
        queued largest first so that the tightest-fit placement packs them all,
        then 1-GPU jobs for any GPU left free."""
        sizes: list[int] = []
        for _ in range(self.shape.nodes):
            left = self.shape.gpus_per_node
            while left:
                fits = [g for g in JOB_GPUS if g <= left]
                gpus = self.rng.choices(fits, JOB_WEIGHTS[: len(fits)])[0]
                sizes.append(gpus)
                left -= gpus
        specs = [self.spec(gpus, self.rng.choice(TIMEOUTS)) for gpus in sorted(sizes)[::-1]]
        self.submit_in_batches(specs)
        self.settle()
        for _ in range(3):
            if not (free := self.free_gpus()):
                break
            self.submit_in_batches([self.spec(1, None) for _ in range(free)])
            self.settle()
        if self.queued() or self.free_gpus():
            raise RuntimeError(
                f"{self.free_gpus()} GPUs free and {self.queued()} jobs waiting after the fill"
            )

    def settle(self) -> None:
        """Dispatch until a pass places nothing, each placement taken up."""
        while True:
            self.take_up_placed()
            if not dispatch_pending(self.rt):
                return
            self.keep_alive()

    def take_up_placed(self) -> int:
        """Claim and start every job placed and not claimed yet, as the worker of its
        first GPU does when its message comes (``ugro.execution.attempt``)."""
        placed = self.rt.registry.list_jobs(statuses=[JobStatus.PLACED])
        for row in placed:
            token, node = row.placement_token or "", row.node or ""
            gpus = [int(i) for i in json.loads(row.gpu_indices or "[]")]
            claimed = self.rt.claim(row.id, [JobStatus.PLACED], token, **claim_values())
            if claimed is None:
                raise RuntimeError(f"job {row.id} could not be claimed")
            if not self.rt.mark_running(claimed, (node, gpus, f"{row.id}|{token}")):
                raise RuntimeError(f"job {row.id}'s lease is another's")
            self.started(RunningJob(claimed, token, node, gpus))
        return len(placed)

    def started(self, job: RunningJob) -> None:
        """A claimed job's attempt recorded as its worker records the start."""
        self.rt.registry.start_attempt(
            job_id=job.row.id,
            number=job.row.attempt,
            node=job.node,
            host=socket.gethostname(),
            gpu_indices=gpu_json(job.gpus),
            pid=os.getpid(),
            started_at=utcnow(),
        )
        self.running[job.row.id] = job

    def end(self, job: RunningJob, dispatch: bool) -> tuple[float, float, str]:
        """End ``job`` as its worker does when its process exits 0, then (with
        ``dispatch``) ask for the worker's own pass. Returns the ms the end's
        records took, the ms from the pass's first round trip (the lease let go)
        to its return, and what became of the GPU: "claimed" (its worker runs the
        next job), "sent" (a pass placed a job there) or "free"."""
        rt, row = self.rt, job.row
        del self.running[row.id]
        now = time.time()
        info = ExitInfo(ExitReason.OK, now, now, code=0)
        spec = JobSpec.model_validate_json(row.spec)
        paths = rt.paths(row.id)
        lease = (job.node, job.gpus, job.holder)
        own = WorkerGpu(job.node, job.gpus[0])
        writes = rt.live.redis.pipeline(transaction=True)
        began = time.perf_counter()
        paths.append_console(end_line(row, info))
        record_end(rt, row, spec, paths, job.node, info, lease, writes)
        recorded = time.perf_counter()
        if not dispatch:
            writes.execute()
            return (recorded - began) * 1000, 0.0, "free"
        dispatch_pending(rt, own, writes)
        placed = time.perf_counter()
        if own.claimed is not None:
            claimed, token, gpus = own.claimed
            self.started(RunningJob(claimed, token, job.node, gpus))
            outcome = "claimed"
        else:
            holder = rt.live.leases.lease_holders(job.node, [own.index])[own.index]
            outcome = "free" if holder is None else "sent"
        self.take_up_placed()
        return (recorded - began) * 1000, (placed - recorded) * 1000, outcome

    def random_running(self) -> RunningJob:
        return self.running[self.rng.choice(sorted(self.running))]
