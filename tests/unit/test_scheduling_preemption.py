"""Preemption's terms: who may stop whom, on which nodes, and the queue's front."""

from __future__ import annotations

import csv
from pathlib import Path

from bench.sched import load_trace
from bench.sched_policies import RESTART_COST, STOP_GRACE, Replay
from ugro.scheduling.fair_share import front_of_queue
from ugro.scheduling.placement import PendingJob
from ugro.scheduling.preemption import NodeGpus, Preemptible, victims_for
from ugro.scheduling.sharing import PreemptionPolicy

TERMS = PreemptionPolicy(min_run_minutes=10)
HOUR = 3600.0


def node(free: int, *held: str) -> NodeGpus:
    """A node of ``free`` free GPUs then one GPU for each of ``held``."""
    return NodeGpus(free, free + len(held), dict(enumerate(held, start=free)))


RUNNING = {
    "a1": Preemptible("a1", "alice", HOUR),
    "a2": Preemptible("a2", "alice", 2 * HOUR),
    "a3": Preemptible("a3", "alice", 60.0),  # ran under min_run
    "c1": Preemptible("c1", "carol", HOUR),
}
USAGE = {"alice": 100.0, "bob": 10.0, "carol": 5.0}


def test_a_short_job_that_waited_may_preempt_a_long_or_fresh_one_may_not() -> None:
    assert TERMS.may_preempt(HOUR, 300)
    assert not TERMS.may_preempt(HOUR, 299)
    assert not TERMS.may_preempt(2 * HOUR, 3 * HOUR)
    assert not TERMS.may_preempt(None, 3 * HOUR)


def test_only_jobs_of_accounts_that_used_more_per_share_and_ran_long_enough_are_stopped() -> None:
    nodes = {"n0": node(0, "c1", "c1"), "n1": node(0, "a3", "a3"), "n2": node(1, "a1")}
    job = PendingJob("b", 2)
    # carol used less than bob, a3 ran too little: only n2, with a1
    assert victims_for(job, "bob", nodes, RUNNING, USAGE, {}, TERMS) == ["a1"]
    # a share of 20 puts alice's usage per share under bob's: nothing to stop
    assert victims_for(job, "bob", nodes, RUNNING, USAGE, {"alice": 20.0}, TERMS) is None
    # nor does anyone stop their own account's jobs
    assert victims_for(job, "alice", nodes, RUNNING, USAGE, {}, TERMS) is None
    # nor a job stopped max_per_job times already
    thrice = RUNNING | {"a1": Preemptible("a1", "alice", HOUR, stopped=3)}
    assert victims_for(job, "bob", nodes, thrice, USAGE, {}, TERMS) is None


def test_the_nodes_where_fewest_gpus_stop_are_chosen_then_the_least_run() -> None:
    nodes = {
        "n0": node(0, "a2", "a2", "a2", "a2"),  # 4 GPUs would stop
        "n1": node(2, "a2x", "a2x"),  # 2 GPUs, of a job that ran 2 h
        "n2": node(2, "a1", "a1"),  # 2 GPUs, of a job that ran 1 h
    }
    running = RUNNING | {"a2x": Preemptible("a2x", "alice", 2 * HOUR)}
    assert victims_for(PendingJob("b", 4), "bob", nodes, running, USAGE, {}, TERMS) == ["a1"]
    # a job across two nodes takes the two cheapest; one pinned takes its node
    gang = PendingJob("g", 4, nodes=2)
    assert victims_for(gang, "bob", nodes, running, USAGE, {}, TERMS) == ["a1", "a2x"]
    pinned = PendingJob("p", 4, node="n0")
    assert victims_for(pinned, "bob", nodes, running, USAGE, {}, TERMS) == ["a2"]


def test_a_preempting_job_heads_the_queue_and_its_victims_follow_it() -> None:
    order = ["x", "v2", "y", "p", "v1"]
    assert front_of_queue(order, ["p"], ["v1", "v2"]) == ["p", "v2", "v1", "x", "y"]


def test_the_simulator_preempts_for_a_short_whole_node_job_and_the_victim_resumes(
    tmp_path: Path,
) -> None:
    trace = tmp_path / "trace.csv"
    rows = [
        # a heavy user's long job holds the one node; a newcomer's job of a minute
        ("long", 0, 10 * HOUR, 4, 1, "heavy"),
        ("quick", 2 * HOUR, 60, 4, 1, "new"),
    ]
    with trace.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["job_id", "submit_s", "duration_s", "gpus", "nodes", "user"])
        writer.writerows(rows)
    jobs, _ = load_trace(trace, nodes=1, gpus_per_node=4)
    plain = Replay(jobs, 1, 4, "ugro-short")
    plain.run()
    assert plain.waits()[1] == 8 * HOUR  # it waits out the long job
    replay = Replay(jobs, 1, 4, "ugro-preempt")
    replay.run()
    long_wait, quick_wait = replay.waits()
    assert replay.preemptions == 1
    # at beat's tick after 5 minutes' wait, then the victim's grace
    assert quick_wait <= 300 + replay.tick + STOP_GRACE
    # the victim resumed when the quick job ended: its grace, the quick job's
    # minute and a restart lost
    assert long_wait == STOP_GRACE + 60 + RESTART_COST
