"""What a node agent reads of its own node for the health sweep.

GPUs through the node's backend (NVML, or the fake one), CPU, memory and the
data dir's disk through psutil, and whether the node's job processes and GPU
workers are alive. The agent publishes a reading every
``health_collect_interval``; the sweep (``ugro.health.sweep``) scores it.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import psutil

from ugro.errors import RegistryUnreachable
from ugro.gpus.base import GpuBackend, GpuInfo
from ugro.jobs.lifecycle import JobStatus
from ugro.live.clock import server_time
from ugro.registry.models import gpu_list
from ugro.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeReading:
    node: str
    host: str
    at: float  # unix time of the reading
    # GpuInfo fields ("processes" left out) and "job": the job holding the GPU's
    # lease when the GPU was read (None: free), so a GPU's utilisation and whether
    # a job holds it are one moment.
    gpus: list[dict[str, Any]]
    cpu_percent: float
    memory_percent: float
    disk_percent: float
    # MB of the data dir's filesystem an unprivileged writer may still use: a small
    # filesystem is full long before its percentage looks alarming (None: an agent
    # of a version that did not read it).
    disk_free_mb: float | None = None
    # Processes this node should have: running jobs' processes and GPU workers.
    processes_expected: int = 0
    # What is missing of them, e.g. "job 2026... process 4242 is gone".
    processes_missing: list[str] = field(default_factory=list)
    error: str | None = None  # the GPU backend itself failed

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str) -> NodeReading:
        return cls(**json.loads(raw))


def _gpu_fields(device: GpuInfo) -> dict[str, Any]:
    values = device.to_dict()
    values.pop("processes", None)
    return values


def read_node(rt: Runtime, backend: GpuBackend, suspects: set[str] | None = None) -> NodeReading:
    """This node's reading now.

    ``suspects``: what the previous reading found gone. A process counts as gone
    only when two readings in a row miss it, so a job that just ended (its
    process exited, its status not yet written) is not reported; the set is
    updated in place.
    """
    settings = rt.settings
    node = settings.node_name
    error = None
    try:
        gpus = [_gpu_fields(device) for device in backend.devices()]
    except Exception as exc:  # the driver itself failed: every GPU is suspect
        gpus, error = [], f"reading the GPUs failed: {exc}"
    # Read right after the devices: a job's lease is taken before its process
    # starts and let go after it ends, so a GPU seen busy here is seen leased.
    holders = rt.live.leases.lease_holders(node, [int(gpu["index"]) for gpu in gpus])
    for gpu in gpus:
        holder = holders[int(gpu["index"])]
        gpu["job"] = None if holder is None else holder.partition("|")[0]
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    disk = shutil.disk_usage(settings.data_dir)
    expected, gone = _process_liveness(rt, node)
    if suspects is None:
        missing = list(gone.values())
    else:
        missing = [message for key, message in gone.items() if key in suspects]
        suspects.clear()
        suspects.update(gone)
    return NodeReading(
        node=node,
        host=socket.gethostname(),
        at=server_time(rt.live.redis),  # beat's sweep judges its age on this clock
        gpus=gpus,
        cpu_percent=psutil.cpu_percent(interval=None),
        memory_percent=psutil.virtual_memory().percent,
        disk_percent=round(100.0 * disk.used / disk.total, 1) if disk.total else 0.0,
        disk_free_mb=round(disk.free / 2**20, 1),
        processes_expected=expected,
        processes_missing=missing,
        error=error,
    )


def _process_liveness(rt: Runtime, node: str) -> tuple[int, dict[str, str]]:
    """How many job processes and GPU workers this node should run, and which of
    them are gone (a running job whose process vanished, a worker that died),
    keyed by what is gone."""
    missing: dict[str, str] = {}
    expected = 0
    for row in rt.registry.list_jobs(statuses=[JobStatus.RUNNING]):
        if row.node != node:
            continue
        attempts = rt.registry.attempts(row.id)
        pid = attempts[-1].pid if attempts else None
        if pid is None:
            continue
        expected += 1
        if not psutil.pid_exists(pid):
            message = f"job {row.id} (GPUs {gpu_list(row)}): process {pid} is gone"
            missing[f"{row.id}:{pid}"] = message
    for worker in rt.live.workers(max_age=rt.settings.worker_ttl * 4):
        if worker.node != node or worker.host != socket.gethostname():
            continue
        expected += 1
        if not psutil.pid_exists(worker.pid):
            message = f"GPU worker {worker.index}: process {worker.pid} is gone"
            missing[f"worker:{worker.index}:{worker.pid}"] = message
    return expected, missing


def publish_reading(rt: Runtime, reading: NodeReading) -> None:
    keys = rt.live.keys
    ttl = max(60, int(rt.settings.health_collect_interval * 10))
    pipe = rt.live.redis.pipeline(transaction=False)
    pipe.set(keys.node_reading(reading.node), reading.to_json(), ex=ttl)
    pipe.hset(keys.health_nodes, reading.node, reading.at)
    pipe.execute()


def latest_readings(rt: Runtime, nodes: list[str]) -> dict[str, NodeReading]:
    if not nodes:
        return {}
    raw = cast(list[str | None], rt.live.redis.mget([rt.live.keys.node_reading(n) for n in nodes]))
    return {
        node: NodeReading.from_json(value) for node, value in zip(nodes, raw, strict=True) if value
    }


def node_as_read(entry: dict[str, Any], reading: NodeReading | None) -> dict[str, Any]:
    """One node of ``Client.nodes()`` as its agent last read it, for ``ugro nodes``:
    each GPU's state, job and numbers come from that one reading (the job is the
    one that held the GPU's lease then), and the reading itself is under
    ``reading``, so a node's totals and its GPUs' rows are one moment. A GPU
    blocked by another program, or on a node dispatch skips, stays blocked.
    Without a reading from the agent a GPU keeps its state now and shows no
    numbers: its worker's own reading is of another moment."""
    read = {int(gpu["index"]): gpu for gpu in reading.gpus} if reading else {}
    gpus = []
    for gpu in entry["gpus"]:
        device = read.get(gpu["index"])
        if device is None:
            gpus.append({**gpu, "reading": None})
            continue
        job = device.get("job")
        state = "blocked" if gpu["blocked"] else ("busy" if job else "free")
        numbers = {name: value for name, value in device.items() if name != "job"}
        gpus.append({**gpu, "state": state, "job": job, "reading": numbers})
    shown = None
    if reading is not None:
        shown = asdict(reading)
        shown["at"] = datetime.fromtimestamp(reading.at, UTC).isoformat()
    return {**entry, "gpus": gpus, "reading": shown}


class HealthCollector:
    """The node agent's thread that reads and publishes this node's health."""

    def __init__(self, rt: Runtime, backend: GpuBackend) -> None:
        self.rt = rt
        self.backend = backend
        self._suspects: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ugro-health", daemon=True)

    def start(self) -> None:
        psutil.cpu_percent(interval=None)  # the first call only primes the counter
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def collect(self) -> NodeReading:
        reading = read_node(self.rt, self.backend, self._suspects)
        publish_reading(self.rt, reading)
        return reading

    def _loop(self) -> None:
        while True:
            try:
                self.collect()
            except RegistryUnreachable as exc:  # the next reading goes when it is back
                log.warning(
                    "health reading of node %s skipped: %s", self.rt.settings.node_name, exc
                )
            except Exception:  # a failed reading must not end the collection
                log.exception("health reading of node %s failed", self.rt.settings.node_name)
            if self._stop.wait(self.rt.settings.health_collect_interval):
                return
