"""The scheduling simulator (`python -m bench.sched`): replays through ugro's own
placement function, reference policies, metrics."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import bench.sched_policies
import bench.usage_ledger
import ugro.scheduling.dispatch
import ugro.scheduling.fair_share
import ugro.scheduling.planning
import ugro.scheduling.preemption
from bench.sched import jain, load_trace, main, replay_all, timeout_for
from bench.sched_policies import Job, Replay
from bench.usage_ledger import USAGE_HALF_LIVES, UsageLedger
from ugro.live.dispatch_state import PendingEntry
from ugro.registry.usage import Used
from ugro.scheduling.fair_share import decayed_usage
from ugro.scheduling.placement import Placement, plan_placements
from ugro.scheduling.planning import GpuView, plan_on

# 2 nodes x 4 GPUs. a fills n0, b 3 GPUs of n1, then c wants both nodes whole (a gang
# of 2 x 4) and waits for b (until 7200 s by b's timeout, as by its true end).
# Under strict FIFO c blocks everything behind it: c runs 7200-8200, then the rest.
# ugro without fair share reserves both nodes for c and backfills only what ends (by
# its timeout) before c's start: d (1 h timeout, n1's last GPU, at once), g (when d
# ended), f and h (on n0 when a ends at 3600: their hour ends by c's start at 7200);
# e and i, with long timeouts, wait for c. Later k (a gang again) waits for e, and l
# (short) runs before it under ugro, after it under FIFO.
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
UGRO_FIFO_STARTS = {
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
# With fair share, beat's tick at 60 s puts u2's f ahead of u1's gang c (u2 has used
# 220 GPU-seconds, u1 240). When d ends at 1820, f reserves n0 (free at 3600) and c
# finds only n1 left to hold: it reserves nothing, and e (u1, 1 GPU, 3 h) takes d's
# GPU. f starts at 3600 on n0, c then reserves both nodes until f's end and h fits
# before it; c starts when e ends (11820), which its reservation reckons by e's
# timeout (12620): g (at f's end, 6600) and j (as it comes, 9000) end by then and
# are backfilled. l, of no user (no usage), comes first at the tick after it came
# and starts at once (9210); i waits for c's end.
UGRO_STARTS = {
    "a": 0,
    "b": 0,
    "c": 11820,
    "d": 20,
    "e": 1820,
    "f": 3600,
    "g": 6600,
    "h": 3600,
    "i": 12820,
    "j": 9000,
    "k": 19820,
    "l": 9210,
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
    assert starts(trace, "ugro-fifo") == UGRO_FIFO_STARTS


def test_ugro_s_fair_share_ranks_the_queue_at_beat_s_ticks(trace: Path) -> None:
    assert starts(trace, "ugro") == UGRO_STARTS
    # ticked at every pass's instant instead, l starts as it comes
    jobs, _ = load_trace(trace, nodes=2, gpus_per_node=4)
    replayed = Replay(jobs, 2, 4, "ugro", tick=1.0).run()
    assert replayed[[j.job_id for j in jobs].index("l")] == 9200


def test_the_backfill_policies_never_start_the_reserved_gang_later_than_fifo(
    trace: Path,
) -> None:
    # (not so with fair share, which may rank another user's jobs ahead of the gang)
    for policy in ("ugro-fifo", "fifo-backfill", "sjf-oracle"):
        got = starts(trace, policy)
        assert got["c"] <= FIFO_STARTS["c"], policy
        assert got["k"] <= FIFO_STARTS["k"], policy


def test_ugro_short_takes_shorter_jobs_first_until_one_waited_too_long(
    trace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # u1's g (1 h timeout) goes before its e (3 h) onto the GPU d leaves at 1820
    short = starts(trace, "ugro-short")
    assert short["g"] == 1820 < short["e"]
    # a job queued over the bound keeps its fair share place: here every one at once
    monkeypatch.setattr(bench.sched_policies, "STARVATION_BOUND", -1.0)
    assert starts(trace, "ugro-short") == UGRO_STARTS


def test_the_simulator_calls_the_very_function_dispatch_calls(
    trace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert vars(bench.sched_policies)["plan_on"] is ugro.scheduling.planning.plan_on
    assert vars(ugro.scheduling.dispatch)["plan_on"] is ugro.scheduling.planning.plan_on
    assert vars(ugro.scheduling.planning)["plan_placements"] is plan_placements
    preemption = ugro.scheduling.preemption
    assert vars(bench.sched_policies)["victims_for"] is preemption.victims_for
    assert vars(bench.sched_policies)["front_of_queue"] is ugro.scheduling.fair_share.front_of_queue
    assert vars(bench.sched_policies)["fair_order"] is ugro.scheduling.fair_share.fair_order
    assert vars(bench.usage_ledger)["decayed_usage"] is decayed_usage
    assert vars(bench.sched_policies)["shortest_first"] is ugro.scheduling.fair_share.shortest_first
    calls: list[list[str]] = []

    def spy(
        view: GpuView, pending: Sequence[PendingEntry], *args: Any, **kwargs: Any
    ) -> list[Placement]:
        calls.append([job.job_id for job in pending])
        return plan_on(view, pending, *args, **kwargs)

    monkeypatch.setattr(bench.sched_policies, "plan_on", spy)
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
        "ugro-fifo",
        "ugro-eta",
        "ugro-short",
        "ugro-short-eta",
        "ugro-preempt",
        "fifo",
        "fifo-backfill",
        "sjf-declared",
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
    for policy in bench.sched_policies.POLICIES:
        assert f"| {policy} |" in out
    assert "target >= 0.9" in out


def test_job_total_gpus() -> None:
    job = Job(0, "x", 0.0, 10.0, 8, 2, "u", 3600.0)
    assert job.total_gpus == 16


def test_the_usage_ledger_is_decayed_usage_over_the_attempts_rank_queue_reads() -> None:
    # Given attempts starting and ending at random, some gangs, some users often
    rng = random.Random(7)
    half_life = 5000.0
    ledger = UsageLedger(half_life)
    attempts: dict[int, Used] = {}
    now = 0.0
    for _ in range(400):
        now += rng.choice([0.0, rng.uniform(0, 3000)])
        running = [job for job, used in attempts.items() if used.ended is None]
        if running and rng.random() < 0.45:
            job = rng.choice(running)
            used = attempts[job]
            ledger.end(job, used.user, used.gpus, used.started, now)
            attempts[job] = Used(used.user, used.gpus, used.started, now)
        else:
            job = len(attempts)
            user, gpus = rng.choice(["u1", "u2", "u3", ""]), rng.choice([1, 2, 8, 16])
            ledger.start(job, user, gpus, now)
            attempts[job] = Used(user, gpus, now, None)
        if rng.random() < 0.3:
            # When a tick reads it, then it is what decayed_usage says of what the
            # registry holds: attempts running or ended within six half-lives
            recent = [
                used
                for used in attempts.values()
                if used.ended is None or used.ended >= now - USAGE_HALF_LIVES * half_life
            ]
            expected = decayed_usage(recent, now, half_life)
            got = ledger.at_time(now)
            assert set(got) >= set(expected)
            for user, used_s in got.items():
                assert used_s == pytest.approx(expected.get(user, 0.0), rel=1e-9, abs=1e-6)
