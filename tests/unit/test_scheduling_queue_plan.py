"""``plan_queue`` (the web dashboard's queue page) against the placement policy: it
places exactly what ``plan_placements`` places, and says which nodes a job that
cannot start holds, through the whole queue."""

from __future__ import annotations

import random

from tests.unit.test_scheduling_placement import _random_pass
from ugro.scheduling.placement import Held, PendingJob, plan_placements, plan_queue


def test_the_queue_page_places_what_the_placement_policy_places() -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    for _ in range(2000):
        args = _random_pass(rng)
        assert plan_queue(*args, whole_queue=True).placements == plan_placements(*args), (
            f"seed {seed}: {args}"
        )


def test_a_big_job_that_cannot_start_holds_the_node_where_it_starts_soonest() -> None:
    # Given two full-ish nodes: a's busy GPUs end in 100 s, b's in 1000 s
    free = {"a": [3], "b": [3]}
    capacity = {"a": 4, "b": 4}
    ends: dict[str, list[float | None]] = {"a": [100.0, 100.0, 100.0], "b": [1000.0] * 3}
    pending = [PendingJob("big", 4), PendingJob("small", 1, timeout=50.0), PendingJob("late", 1)]
    # When the queue is planned
    plan = plan_queue(pending, free, capacity, ends, whole_queue=True)
    # then the big job holds a from 100 s on; the short job takes b's free GPU (a
    # node nobody holds first), and the next job, which could delay the big one on
    # a, holds b from when the short one ends
    assert {p.job_id: p.node for p in plan.placements} == {"small": "b"}
    assert plan.held == {"big": [Held("a", 100.0)], "late": [Held("b", 50.0)]}


def test_a_full_cluster_still_shows_the_head_s_reservation() -> None:
    plan = plan_queue(
        [PendingJob("big", 2)], {"a": []}, {"a": 2}, {"a": [30.0, None]}, whole_queue=True
    )
    assert plan.placements == []
    assert plan.held == {"big": [Held("a", 30.0)]}
