"""The scheduling simulator (`python -m bench.sched`): replays through ugro's own
placement function, reference policies, metrics."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import bench.sched_policies
import ugro.scheduling.dispatch
import ugro.scheduling.placement
from bench.sched import jain, load_trace, main, replay_all, timeout_for
from bench.sched_policies import Job, Replay
from ugro.scheduling.placement import PendingJob, Placement, plan_placements

# 2 nodes x 4 GPUs. a fills n0, b 3 GPUs of n1, then c wants both nodes whole (a gang
# of 2 x 4) and waits for b (until 7200 s by b's timeout, as by its true end).
# Under strict FIFO c blocks everything behind it: c runs 7200-8200, then the rest.
# ugro reserves both nodes for c and backfills only what ends (by its timeout)
# before c's start: d (1 h timeout, n1's last GPU, at once), g (when d ended), f and
# h (on n0 once a ended at 3600: their 1 h timeouts end by 7200, just in time);
# e and i, with long timeouts, wait for c. Later k (a gang again) waits for e, and
# l (short) runs before it under ugro, after it under FIFO.
TRACE = """job_id,submit_s,duration_s,gpus,nodes,user
a,0,3600,4,1,u1
b,0,7200,3,1,u2
c,10,1000,8,2,u1
d,20,1800,1,1,u2
e,30,10000,1,1,u1
f,40,3000,2,1,u2
g,50,600,1,1,u1
h,60,3000,2,1,u2
i,70,7000,1,1,u1
j,9000,100,1,1,u2
k,9100,500,8,2,u1
l,9200,100,1,1,
"""
FIFO_STARTS = {
    "a": 0,
    "b": 0,
    "c": 7200,
    "d": 8200,
    "e": 8200,
    "f": 8200,
    "g": 8200,
    "h": 8200,
    "i": 8200,
    "j": 9000,
    "k": 18200,
    "l": 18700,
}
UGRO_STARTS = {
    "a": 0,
    "b": 0,
    "c": 7200,
    "d": 20,
    "e": 8200,
    "f": 3600,
    "g": 1820,
    "h": 3600,
    "i": 8200,
    "j": 9000,
    "k": 18200,
    "l": 9200,
}


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    path = tmp_path / "trace.csv"
    path.write_text(TRACE)
    return path


def starts(trace: Path, policy: str) -> dict[str, float]:
    jobs, skipped = load_trace(trace, nodes=2, gpus_per_node=4)
    assert skipped == []
    replayed = Replay(jobs, 2, 4, policy).run()
    return {job.job_id: replayed[job.index] for job in jobs}


def test_strict_fifo_lets_the_head_block_everything_behind_it(trace: Path) -> None:
    assert starts(trace, "fifo") == FIFO_STARTS


def test_ugro_backfills_only_what_ends_before_the_reserved_gang_starts(trace: Path) -> None:
    assert starts(trace, "ugro") == UGRO_STARTS


def test_the_backfill_policies_never_start_the_reserved_gang_later_than_fifo(
    trace: Path,
) -> None:
    for policy in ("ugro-eta", "fifo-backfill", "sjf-oracle"):
        got = starts(trace, policy)
        assert got["c"] <= FIFO_STARTS["c"], policy
        assert got["k"] <= FIFO_STARTS["k"], policy


def test_the_simulator_calls_the_very_function_dispatch_calls(
    trace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    used = vars(bench.sched_policies)["plan_placements"]
    assert used is vars(ugro.scheduling.dispatch)["plan_placements"]
    assert used is ugro.scheduling.placement.plan_placements
    calls: list[list[str]] = []

    def spy(pending: Sequence[PendingJob], *args: Any) -> list[Placement]:
        calls.append([job.job_id for job in pending])
        return plan_placements(pending, *args)

    monkeypatch.setattr(bench.sched_policies, "plan_placements", spy)
    assert starts(trace, "ugro") == UGRO_STARTS
    assert calls and calls[0] == ["0", "1"]  # a and b, the first pass


def test_a_job_over_a_node_runs_on_whole_nodes_and_one_that_never_fits_is_skipped(
    tmp_path: Path,
) -> None:
    path = tmp_path / "trace.csv"
    path.write_text(
        "job_id,submit_s,duration_s,gpus,nodes,user\n"
        "x,0,10,16,2,u\ny,1,3601,24,3,u\nz,2,10,64,8,u\nw,3,10,2,1,\n"
    )
    jobs, skipped = load_trace(path, nodes=4, gpus_per_node=8)
    assert [(j.job_id, j.gpus, j.nodes) for j in jobs] == [("x", 8, 2), ("y", 8, 3), ("w", 2, 1)]
    assert skipped == ["z"]
    assert [j.timeout for j in jobs] == [3600, 7200, 3600]
    # on 4-GPU nodes a 16-GPU job spans 4 nodes, 4 GPUs each
    jobs, _ = load_trace(path, nodes=4, gpus_per_node=4)
    assert (jobs[0].gpus, jobs[0].nodes) == (4, 4)


def test_a_timeout_is_the_duration_rounded_up_to_the_next_hour() -> None:
    assert [timeout_for(d) for d in (1, 3599, 3600, 3601, 86_400)] == [
        3600,
        3600,
        3600,
        7200,
        86_400,
    ]


def test_jain_s_index_of_equal_values_is_one_and_of_one_taking_all_is_one_over_n() -> None:
    assert jain([3.0, 3.0, 3.0, 3.0]) == pytest.approx(1.0)
    assert jain([5.0, 0.0, 0.0, 0.0]) == pytest.approx(0.25)


def test_metrics_of_a_replay(trace: Path) -> None:
    jobs, _ = load_trace(trace, nodes=2, gpus_per_node=4)
    fifo, ugro_ = replay_all(jobs, 2, 4, ["fifo", "ugro"])
    s = fifo.summary
    waits = [FIFO_STARTS[j.job_id] - j.submit for j in jobs]
    assert s.avg_queue_s == pytest.approx(sum(waits) / len(waits))
    assert s.makespan_s == 18_700 + 100  # l, the last to end
    busy = sum(j.duration * j.total_gpus for j in jobs)
    assert s.utilisation == pytest.approx(busy / (8 * 18_800))
    assert s.max_multi_gpu_wait_s == 9100  # k: 9100 to 18200
    assert ugro_.summary.avg_queue_s < s.avg_queue_s
    assert 0 < s.fairness <= 1


def test_json_prints_one_object_per_policy_with_exactly_the_keys(
    trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(trace), "--nodes", "2", "--gpus-per-node", "4", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [p["policy"] for p in printed] == [
        "ugro",
        "ugro-eta",
        "fifo",
        "fifo-backfill",
        "sjf-oracle",
    ]
    keys = {
        "policy",
        "avg_jct_s",
        "median_jct_s",
        "avg_queue_s",
        "p95_queue_s",
        "makespan_s",
        "utilisation",
        "fairness",
        "max_multi_gpu_wait_s",
    }
    assert all(set(p) == keys for p in printed)


def test_the_table_names_each_policy_and_the_targets(
    trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(trace), "--nodes", "2", "--gpus-per-node", "4"]) == 0
    out = capsys.readouterr().out
    assert "12 jobs replayed, 0 skipped" in out
    for policy in ("ugro", "ugro-eta", "fifo", "fifo-backfill", "sjf-oracle"):
        assert f"| {policy} |" in out
    assert "target >= 0.9" in out


def test_job_total_gpus() -> None:
    job = Job(0, "x", 0.0, 10.0, 8, 2, "u", 3600.0)
    assert job.total_gpus == 16
