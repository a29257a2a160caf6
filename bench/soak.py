"""`python -m bench.soak [--seconds N] [--seed S] [--drain S] [--json]`: ugro under load and
faults for a bounded time, then README's "Reliability" promises checked.

Three hosts of four simulated GPUs (the multi-host bed of tests/hosts.py: each host
a network namespace running `ugro worker`; Redis, with an append-only file, and
beat on the services host; the registry on PostgreSQL when it runs here) run a
random mix of 1-, 2- and 4-GPU jobs and 2-node gang jobs, 1-8 s each, for
``--seconds`` (600 by default), while faults come at random, one at a time: a GPU
worker SIGKILLed, a host's link pulled and plugged back, Redis restarted. Then
nothing more is submitted and the soak drains: it waits, with a bound, until every
job has ended. The checks (bench/soak_checks.py) judge what a sampler saw every
0.2 s meanwhile, and the registry, the jobs' folders, the processes, beat and the
GPU workers after.

Timings are short, as in the fault tests: an 8 s lease, a 1 s heartbeat, a 2 s
reconcile tick, a 4 s fence grace. ``--seed`` fixes the jobs and the faults' kinds
and times; which job a fault hits depends on where the jobs run then.

Prints the figures and the checks (``--json``: one JSON object); exits 1 when a
check fails. Everything it started is stopped and the namespaces removed however
it ends; its data dir (the jobs' folders, the hosts' logs in bed/) is kept when a
check fails.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from bench.soak_checks import all_checks, as_json, collect, dumps, services_up
from tests.conftest import make_settings, registry_database, wait_until
from tests.faults import Sampler, job_processes
from tests.hosts import Host, TestBed, multi_host_bed
from ugro import Client, JobSpec
from ugro.errors import UgroError
from ugro.jobs.lifecycle import JobStatus

HOSTS, GPUS = 3, 4
TIMINGS: dict[str, Any] = {
    "lease_ttl": 8.0,
    "heartbeat_interval": 1.0,
    "reconcile_interval": 2.0,
    "worker_ttl": 6.0,
    # Under the lease TTL with room for the stop grace: a cut-off worker's job is
    # gone before its lease can run out and the job run elsewhere.
    "fence_grace": 4.0,
    "stop_grace": 2.0,
    "gang_start_timeout": 20.0,
    "placement_ttl": 30.0,
    # A host back from a pulled cable serves again within seconds, not minutes.
    "breaker_open_seconds": 3.0,
}
#: (nodes, GPUs on each) of a job, with their weights.
SHAPES = {(1, 1): 4, (1, 2): 3, (1, 4): 2, (2, 1): 2, (2, 2): 1}
SECONDS = (1.0, 8.0)
MAX_RETRIES = 3
#: Jobs submitted and not ended yet, at most: enough to keep every GPU busy and a
#: queue behind them, few enough that the drain stays short.
BACKLOG = 16
FAULTS = ("worker_kill", "cable", "redis_restart")
#: Seconds from one fault's end to the next's start; how long a cable stays out
#: (from under the fence grace to past the lease TTL); how long Redis stays down.
GAP = (5.0, 12.0)
CABLE_OUT = (2.0, 14.0)
REDIS_DOWN = (0.0, 2.0)
#: Seconds between the timeline's lines on the jobs open and the GPUs usable.
STATUS_EVERY = 30.0
# A job's process writes "<attempt> <node rank>" to its folder as it starts, so
# the checks count the starts of each attempt; then it works for its length.
COMMAND = 'echo "$UGRO_ATTEMPT ${{UGRO_NODE_RANK:-0}}" >> "$UGRO_JOB_DIR/starts"; exec sleep {}'
#: What a client call may raise while Redis restarts or a fault is under way.
TRANSIENT = (UgroError, redis.RedisError, OSError)


class Soak:
    """The load and the faults on a running bed, step by step from one loop."""

    def __init__(self, bed: TestBed, client: Client, rng: random.Random) -> None:
        self.bed, self.client, self.rng = bed, client, rng
        self.open: set[str] = set()
        self.submitted = 0
        self.refused = 0
        self.faults: Counter[str] = Counter()
        self.log: list[str] = []
        self.began = time.monotonic()
        # The order of fault kinds: each kind once in every round of three.
        self._kinds: list[str] = []
        self._cut: tuple[Host, float] | None = None
        self._next_fault = self.began + rng.uniform(*GAP) / 2
        self._next_status = self.began

    def note(self, text: str) -> None:
        self.log.append(f"{time.monotonic() - self.began:7.1f} s  {text}")

    def load(self, seconds: float) -> None:
        """Submit and inject faults for ``seconds``; every cable plugged after."""
        end = self.began + seconds
        try:
            while (now := time.monotonic()) < end:
                self._top_up()
                if now >= self._next_status:
                    self.note_status()
                    self._next_status = now + STATUS_EVERY
                if self._cut is not None and now >= self._cut[1]:
                    self._plug()
                elif self._cut is None and now >= self._next_fault:
                    self._fault()
                time.sleep(0.25)
        finally:
            if self._cut is not None:
                self._plug()

    def note_status(self) -> None:
        """A line of the timeline: jobs open, each node's GPUs that dispatch may
        use, and the nodes it must not."""
        try:
            live = self.client.rt.live
            usable = Counter(
                w.node for w in live.workers(self.bed.settings.worker_ttl) if not w.blocked
            )
            unhealthy = live.redis.hgetall(self.client.rt.keys.unhealthy_nodes)
        except TRANSIENT as error:
            self.note(f"status unread: {type(error).__name__}")
            return
        gpus = ", ".join(f"{host.node} {usable[host.node]}" for host in self.bed.hosts)
        self.note(f"{len(self.open)} jobs open; usable GPUs: {gpus}; unhealthy: {unhealthy}")

    def waiting(self) -> list[str]:
        """Each job not ended: its shape, status and why it waits."""
        found = []
        for job in self.client.list():
            if not job.done:
                why = self.client.why_waiting(job.id)
                found.append(
                    f"{job.id} {job.num_nodes}x{job.gpus} GPUs {job.status.value} "
                    f"attempt {job.attempt}: {why}"
                )
        return found

    def _top_up(self) -> None:
        try:
            if self.open:
                ended = [job.id for job in self.client.get_many(sorted(self.open)) if job.done]
                self.open.difference_update(ended)
            while len(self.open) < BACKLOG:
                self.open.add(self.client.submit(self._spec()).id)
                self.submitted += 1
        except TRANSIENT as error:
            # Redis restarting: the soak submits again at its next step. A job half
            # made by a refused submission is still counted: the checks read the
            # registry, not this list.
            self.refused += 1
            self.note(f"submission refused: {type(error).__name__}: {error}")

    def _spec(self) -> JobSpec:
        nodes, gpus = self.rng.choices(list(SHAPES), weights=list(SHAPES.values()))[0]
        seconds = round(self.rng.uniform(*SECONDS), 1)
        # The shell runs the soak's own fixed line, no input of anyone's.
        return JobSpec(  # noqa: S604
            name=f"soak-{self.submitted}",
            command=[COMMAND.format(seconds)],
            shell=True,
            gpus=gpus,
            nodes=nodes,
            max_retries=MAX_RETRIES,
        )

    def _fault(self) -> None:
        if not self._kinds:
            self._kinds = self.rng.sample(FAULTS, len(FAULTS))
        kind = self._kinds.pop()
        try:
            if kind == "worker_kill":
                self._kill_worker()
            elif kind == "cable":
                host = self.rng.choice(self.bed.hosts)
                out = self.rng.uniform(*CABLE_OUT)
                self.bed.pull_cable(host)
                self._cut = (host, time.monotonic() + out)
                self.note(f"cable of {host.node} pulled for {out:.1f} s")
            else:
                down = self.rng.uniform(*REDIS_DOWN)
                self.bed.restart_redis(down)
                self.note(f"Redis restarted, down {down:.1f} s")
        except TRANSIENT as error:
            self.note(f"{kind} not injected: {type(error).__name__}: {error}")
        else:
            self.faults[kind] += 1
        self._next_fault = time.monotonic() + self.rng.uniform(*GAP)

    def _plug(self) -> None:
        assert self._cut is not None
        self.bed.plug_cable(self._cut[0])
        self.note(f"cable of {self._cut[0].node} plugged back")
        self._cut = None
        self._next_fault = time.monotonic() + self.rng.uniform(*GAP)

    def _kill_worker(self) -> None:
        """SIGKILL a GPU worker, one running a job when there is one."""
        live = self.client.rt.live
        workers = sorted(
            live.workers(self.bed.settings.worker_ttl), key=lambda w: (w.node, w.index)
        )
        if not workers:
            raise UgroError("no live GPU worker to kill")
        holders = live.leases.lease_holders
        busy = [w for w in workers if holders(w.node, [w.index]).get(w.index)]
        worker = self.rng.choice(busy or workers)
        os.kill(worker.pid, signal.SIGKILL)
        self.note(f"GPU worker {worker.node}:{worker.index} (pid {worker.pid}) killed")

    def drain(self, bound: float) -> float:
        """Wait until every job has ended, at most ``bound`` s; the time it took."""
        began = time.monotonic()
        registry = self.client.rt.registry
        while time.monotonic() - began < bound:
            if all(JobStatus(row.status).is_terminal for row in registry.list_jobs()):
                break
            time.sleep(1.0)
        return time.monotonic() - began


def wait_for_no_job_process(jobs_dir: Path, bound: float) -> dict[int, dict[str, str]]:
    """The jobs' processes still alive once ``bound`` s passed (none, at once, if
    none is): the agents' orphan scans get that long to stop a straggler."""
    deadline = time.monotonic() + bound
    while (left := job_processes(jobs_dir)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def soak(seconds: float, seed: int, drain_bound: float, where: Path) -> dict[str, Any]:
    """Run the soak in ``where``; its figures and checks."""
    rng = random.Random(seed)
    with registry_database(where) as database:
        settings = make_settings(where / "data", database, **TIMINGS)
        with (
            multi_host_bed(settings, hosts=HOSTS, gpus=GPUS, beat=True, appendonly=True) as bed,
            Client(bed.settings) as client,
        ):
            # Every GPU worker up and every node healthy (the sweep has read each
            # agent's reports) before the load: dispatch may use every GPU from the start
            every_gpu = {(host.node, i) for host in bed.hosts for i in range(GPUS)}
            wait_until(
                lambda: {(w.node, w.index) for w in client.rt.live.workers(6.0)} == every_gpu,
                120,
                "every host's GPU workers",
                lambda: bed.log(bed.hosts[0]),
            )
            wait_until(
                lambda: not client.rt.live.redis.hlen(client.rt.keys.unhealthy_nodes),
                60,
                "every node healthy",
            )
            run = Soak(bed, client, rng)
            with Sampler(client, gpus=HOSTS * GPUS) as sampler:
                run.load(seconds)
                run.note("load over: draining")
                drained = run.drain(drain_bound)
                run.note(f"drained in {drained:.1f} s")
                run.note_status()
                waiting = run.waiting()
            left = wait_for_no_job_process(bed.settings.jobs_dir, bed.settings.lease_ttl * 2)
            jobs = collect(client)
            workers = len(client.rt.live.workers(bed.settings.worker_ttl))
            beat_exit = bed.beat.poll() if bed.beat is not None else -1
            services = services_up(beat_exit, workers, HOSTS * GPUS)
            checks = all_checks(jobs, sampler, left, services)
            logs = {} if all(c.passed for c in checks) else {h.node: bed.log(h) for h in bed.hosts}
    statuses = Counter(job.status.value for job in jobs)
    return {
        "seconds": seconds,
        "seed": seed,
        "hosts": HOSTS,
        "gpus_per_host": GPUS,
        "jobs": len(jobs),
        "gang_jobs": sum(job.nodes > 1 for job in jobs),
        "submissions_refused": run.refused,
        "statuses": dict(sorted(statuses.items())),
        "attempts": sum(job.attempt for job in jobs),
        "retried_jobs": sum(job.attempt > 1 for job in jobs),
        "faults": {kind: run.faults[kind] for kind in FAULTS},
        "drain_seconds": round(drained, 1),
        "checks": as_json(checks),
        "passed": all(c.passed for c in checks),
        "timeline": run.log,
        "not_ended": waiting,
        "logs": logs,
    }


def render(report: dict[str, Any]) -> str:
    lines = [
        f"soak: {report['seconds']:g} s of load on {report['hosts']} hosts x "
        f"{report['gpus_per_host']} GPUs, seed {report['seed']}",
        f"jobs run: {report['jobs']} ({report['gang_jobs']} gang), "
        + ", ".join(f"{n} {status}" for status, n in report["statuses"].items()),
        f"attempts: {report['attempts']} ({report['retried_jobs']} jobs retried); "
        f"submissions refused while Redis restarted: {report['submissions_refused']}",
        "faults: " + ", ".join(f"{kind} {n}" for kind, n in report["faults"].items()),
        f"drained in {report['drain_seconds']} s",
        "checks:",
        *(
            f"  {'pass' if c['passed'] else 'FAIL'}  {c['name']}: {c['detail']}"
            for c in report["checks"]
        ),
    ]
    if not report["passed"]:
        lines += ["timeline:", *report["timeline"], "not ended:", *report["not_ended"]]
        lines.append(f"data dir kept: {report.get('kept')}")
        lines += [f"--- {node} log (tail)\n{log}" for node, log in report["logs"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="of load (default 600)")
    parser.add_argument("--seed", type=int, default=26)
    parser.add_argument("--drain", type=float, default=180.0, help="bound of the drain (s)")
    parser.add_argument("--json", action="store_true", help="the report as one JSON object")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the soak makes network namespaces: run it as root", file=sys.stderr)
        return 2
    where = Path(tempfile.mkdtemp(prefix="ugro-soak-"))
    report = soak(args.seconds, args.seed, args.drain, where)
    if report["passed"]:
        shutil.rmtree(where, ignore_errors=True)
    else:
        # The jobs' folders and the hosts' logs (data/bed/), for whoever looks into it
        report["kept"] = str(where)
    print(dumps(report) if args.json else render(report), flush=True)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
