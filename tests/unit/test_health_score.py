"""The health score and its levels, from readings made up in the test (pure)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_settings
from ugro.health.netprobe import NetProbe
from ugro.health.readings import NodeReading
from ugro.health.score import score_node
from ugro.settings import Settings

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
def limits(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, "sqlite://", health_collect_interval=5.0)


def gpu(index: int, **changes: Any) -> dict[str, Any]:
    values = {"index": index, "utilization": 50.0, "temperature_c": 60.0, "error": None}
    return {**values, **changes}


def reading(**changes: Any) -> NodeReading:
    values: dict[str, Any] = {
        "node": "n",
        "host": "h",
        "at": time.time(),
        "gpus": [gpu(0), gpu(1)],
        "cpu_percent": 20.0,
        "memory_percent": 30.0,
        "disk_percent": 40.0,
    }
    return NodeReading(**{**values, **changes})


def test_a_healthy_node_scores_100_info(limits: Settings) -> None:
    verdict = score_node(reading(), None, time.time(), limits)
    assert (verdict.score, verdict.level, verdict.reasons) == (100, "INFO", [])
    assert verdict.reachable


def test_a_gpu_that_does_not_answer_is_critical(limits: Settings) -> None:
    verdict = score_node(reading(gpus=[gpu(0), gpu(1, error="lost")]), None, time.time(), limits)
    assert verdict.level == "CRITICAL"
    assert verdict.score == 80  # half the GPU points gone
    assert verdict.reasons == ["GPU 1 not answering: lost"]


@pytest.mark.parametrize(
    ("temperature", "level", "score"), [(85.0, "WARNING", 90), (95.0, "CRITICAL", 80)]
)
def test_a_hot_gpu_warns_then_is_critical(
    limits: Settings, temperature: float, level: str, score: int
) -> None:
    verdict = score_node(
        reading(gpus=[gpu(0), gpu(1, temperature_c=temperature)]), None, time.time(), limits
    )
    assert (verdict.level, verdict.score) == (level, score)
    assert f"GPU 1 at {temperature:.0f} C" in verdict.reasons[0]


def test_a_data_dir_with_almost_no_room_is_critical_whatever_its_percentage(
    limits: Settings,
) -> None:
    small = limits.model_copy(update={"disk_critical_free_mb": 64.0})
    full = score_node(reading(disk_percent=80.0, disk_free_mb=12.5), None, time.time(), small)
    assert full.level == "CRITICAL"
    assert full.reasons == [
        "data dir full: 12.5 MB free on its disk (80% used; critical below 64 MB)"
    ]
    roomy = score_node(reading(disk_free_mb=500.0), None, time.time(), small)
    assert roomy.level == "INFO"
    # an agent that does not read the free space is judged by the percentage alone
    assert score_node(reading(disk_free_mb=None), None, time.time(), small).level == "INFO"


def test_a_full_disk_is_critical_and_a_busy_cpu_only_warns(limits: Settings) -> None:
    full = score_node(reading(disk_percent=99.0), None, time.time(), limits)
    assert full.level == "CRITICAL" and "disk of the data dir 99% used" in full.reasons[0]
    busy = score_node(reading(cpu_percent=99.0), None, time.time(), limits)
    assert busy.level == "WARNING" and busy.score == 95


def test_a_silent_agent_is_critical(limits: Settings) -> None:
    old = reading(at=time.time() - 120)
    verdict = score_node(old, None, time.time(), limits)
    assert verdict.level == "CRITICAL" and not verdict.reachable
    assert verdict.reasons[0].startswith("agent silent for 12")
    assert score_node(None, None, time.time(), limits).level == "CRITICAL"


def test_network_probe_unreachable_or_slow(limits: Settings) -> None:
    down = NetProbe("n", False, None, "connection refused", None)
    verdict = score_node(reading(), down, time.time(), limits)
    assert verdict.level == "CRITICAL" and verdict.score == 80
    assert verdict.reasons == ["unreachable: connection refused"]
    slow = NetProbe("n", True, 900.0, None, None)
    verdict = score_node(reading(), slow, time.time(), limits)
    assert verdict.level == "WARNING" and verdict.score == 90 and verdict.latency_ms == 900.0


def test_a_probed_node_without_an_agent_is_scored_from_nvidia_smi(limits: Settings) -> None:
    probe = NetProbe("n", True, 3.0, None, [gpu(0), gpu(1, temperature_c=99.0)])
    verdict = score_node(None, probe, time.time(), limits)
    # Scored on what could be checked: network 20 + one GPU of two 20, of 60.
    assert verdict.level == "CRITICAL" and verdict.score == 67
    assert "no ugro agent reports from this node" in verdict.reasons
    network_only = score_node(None, NetProbe("n", True, 3.0, None, None), time.time(), limits)
    assert (network_only.level, network_only.score) == ("WARNING", 100)


def test_missing_processes_cost_the_process_points(limits: Settings) -> None:
    base = reading(processes_expected=4, processes_missing=["job x: process 1 is gone"])
    verdict = score_node(base, None, time.time(), limits)
    assert verdict.level == "WARNING" and verdict.score == 98  # 10 * 3/4 rounded
    assert verdict.reasons == ["job x: process 1 is gone"]
    broken = replace(base, error="reading the GPUs failed: driver gone")
    assert score_node(broken, None, time.time(), limits).level == "CRITICAL"
