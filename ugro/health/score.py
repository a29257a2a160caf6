"""The health score of a node, 0-100, and its level, from what was read of it.

Weights: GPU 40, system 30, network 20, processes 10. Any critical finding
(a GPU that does not answer, a full disk, a node that cannot be reached or whose
agent went silent) makes the level CRITICAL whatever the sum; otherwise the
score's thresholds decide between WARNING and INFO. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from ugro.health.readings import NodeReading
from ugro.settings import Settings

if TYPE_CHECKING:
    from ugro.health.netprobe import NetProbe

Level = Literal["INFO", "WARNING", "CRITICAL"]
GPU_WEIGHT, SYSTEM_WEIGHT, NETWORK_WEIGHT, PROCESS_WEIGHT = 40.0, 30.0, 20.0, 10.0


@dataclass
class Verdict:
    score: int
    level: Level
    reachable: bool
    latency_ms: float | None = None
    reasons: list[str] = field(default_factory=list)


@dataclass
class _Tally:
    critical: list[str] = field(default_factory=list)
    warning: list[str] = field(default_factory=list)


def _gpu_points(reading: NodeReading, s: Settings, tally: _Tally) -> float:
    if reading.error:
        tally.critical.append(reading.error)
        return 0.0
    if not reading.gpus:
        return GPU_WEIGHT  # a CPU-only node: nothing to hold against it
    points = 0.0
    for gpu in reading.gpus:
        index, temp = gpu["index"], gpu.get("temperature_c")
        if gpu.get("error"):
            tally.critical.append(f"GPU {index} not answering: {gpu['error']}")
        elif temp is not None and temp >= s.gpu_temp_critical_c:
            tally.critical.append(
                f"GPU {index} at {temp:.0f} C (critical {s.gpu_temp_critical_c:.0f})"
            )
        elif temp is not None and temp >= s.gpu_temp_warning_c:
            tally.warning.append(
                f"GPU {index} at {temp:.0f} C (warning {s.gpu_temp_warning_c:.0f})"
            )
            points += 0.5
        else:
            points += 1.0
    return GPU_WEIGHT * points / len(reading.gpus)


def _system_points(reading: NodeReading, s: Settings, tally: _Tally) -> float:
    each = SYSTEM_WEIGHT / 3
    points = 0.0
    free = reading.disk_free_mb
    checks = [
        ("memory", reading.memory_percent, s.memory_warning_percent, s.memory_critical_percent)
    ]
    if free is not None and free < s.disk_critical_free_mb:
        # Full whatever its percentage says: on a small filesystem the last few MB
        # go while the percentage still looks like room.
        tally.critical.append(
            f"data dir full: {free:.1f} MB free on its disk"
            f" ({reading.disk_percent:.0f}% used; critical below {s.disk_critical_free_mb:g} MB)"
        )
    else:
        disk = reading.disk_percent, s.disk_warning_percent, s.disk_critical_percent
        checks.insert(0, ("disk of the data dir", *disk))
    for what, value, warn, crit in checks:
        if value >= crit:
            tally.critical.append(f"{what} {value:.0f}% used (critical {crit:.0f}%)")
        elif value >= warn:
            tally.warning.append(f"{what} {value:.0f}% used (warning {warn:.0f}%)")
            points += each / 2
        else:
            points += each
    if reading.cpu_percent >= s.cpu_warning_percent:
        # A busy CPU is a slow node, not a broken one: never critical.
        tally.warning.append(f"CPU {reading.cpu_percent:.0f}% busy")
        points += each / 2
    else:
        points += each
    return points


def _process_points(reading: NodeReading, tally: _Tally) -> float:
    if not reading.processes_expected:
        return PROCESS_WEIGHT
    gone = len(reading.processes_missing)
    tally.warning.extend(reading.processes_missing)
    alive = max(reading.processes_expected - gone, 0)
    return PROCESS_WEIGHT * alive / reading.processes_expected


def score_node(
    reading: NodeReading | None,
    probe: NetProbe | None,
    now: float,
    settings: Settings,
) -> Verdict:
    """Score one node from its agent's reading (None: no agent reports) and its
    network probe (None: not in the cluster file)."""
    tally = _Tally()
    stale_after = max(3 * settings.health_collect_interval, 15.0)
    fresh = reading is not None and now - reading.at <= stale_after
    network = 0.0
    reachable = fresh
    latency = None
    if probe is not None:
        reachable = probe.reachable
        latency = probe.latency_ms
        if not probe.reachable:
            tally.critical.append(f"unreachable: {probe.error}")
        elif latency is not None and latency >= settings.latency_warning_ms:
            tally.warning.append(f"SSH round trip {latency:.0f} ms")
            network = NETWORK_WEIGHT / 2
        else:
            network = NETWORK_WEIGHT
    elif fresh:
        network = NETWORK_WEIGHT  # its agent talks to Redis: it is on the network
    points = network
    # What could be checked: a node probed over SSH with no agent is scored on
    # its network (and its GPUs, when nvidia-smi answered) alone.
    weight = 100.0
    if fresh and reading is not None:
        points += _gpu_points(reading, settings, tally)
        points += _system_points(reading, settings, tally)
        points += _process_points(reading, tally)
    elif reading is not None:
        tally.critical.append(f"agent silent for {now - reading.at:.0f} s")
    elif probe is None:
        tally.critical.append("no agent reports from this node")
    elif probe.reachable:
        tally.warning.append("no ugro agent reports from this node")
        weight = NETWORK_WEIGHT
        if probe.gpus is not None:
            points += _gpu_points(_reading_from_probe(probe, now), settings, tally)
            weight += GPU_WEIGHT
    score = round(100 * points / weight)
    level: Level = "INFO"
    if tally.critical or score < settings.score_critical:
        level = "CRITICAL"
    elif tally.warning or score < settings.score_warning:
        level = "WARNING"
    return Verdict(score, level, reachable, latency, tally.critical + tally.warning)


def _reading_from_probe(probe: NetProbe, now: float) -> NodeReading:
    return NodeReading(
        node=probe.node,
        host="",
        at=now,
        gpus=list(probe.gpus or []),
        cpu_percent=0.0,
        memory_percent=0.0,
        disk_percent=0.0,
    )
