"""Placement decisions: pure data in, data out."""

from __future__ import annotations

from ugro.scheduling.placement import PendingJob, Placement, plan_placements


def test_jobs_take_free_gpus_in_queue_order() -> None:
    pending = [PendingJob("a", 1), PendingJob("b", 1), PendingJob("c", 1)]
    plans = plan_placements(pending, {"n1": [0, 1]}, {"n1": 2})
    assert plans == [Placement("a", "n1", (0,)), Placement("b", "n1", (1,))]


def test_a_multi_gpu_job_gets_exactly_its_gpus_on_one_node() -> None:
    plans = plan_placements(
        [PendingJob("big", 3)], {"n1": [0, 2], "n2": [1, 2, 3]}, {"n1": 4, "n2": 4}
    )
    assert plans == [Placement("big", "n2", (1, 2, 3))]


def test_best_fit_keeps_large_holes_open() -> None:
    plans = plan_placements(
        [PendingJob("small", 1), PendingJob("big", 4)],
        {"n1": [3], "n2": [0, 1, 2, 3]},
        {"n1": 4, "n2": 4},
    )
    assert plans == [Placement("small", "n1", (3,)), Placement("big", "n2", (0, 1, 2, 3))]


def test_a_blocked_big_job_reserves_its_node_against_later_small_jobs() -> None:
    pending = [PendingJob("big", 4), PendingJob("small", 1)]
    plans = plan_placements(pending, {"n1": [0, 1]}, {"n1": 4})
    assert plans == []


def test_a_pinned_job_goes_only_to_its_node() -> None:
    plans = plan_placements(
        [PendingJob("p", 1, node="n2")], {"n1": [0], "n2": [5]}, {"n1": 1, "n2": 8}
    )
    assert plans == [Placement("p", "n2", (5,))]


def test_nothing_free_places_nothing() -> None:
    assert plan_placements([PendingJob("a", 1)], {"n1": []}, {"n1": 2}) == []


def test_a_tie_between_nodes_goes_to_the_name_first_in_str_order_then_the_lowest_index() -> None:
    # (the order of Python's str, code point by code point: "B" before "a")
    free = {"a": [3, 1], "B": [2, 0], "c": [0]}
    capacity = {"a": 4, "B": 4, "c": 4}
    plans = plan_placements([PendingJob("j", 1), PendingJob("k", 1)], free, capacity)
    assert plans == [Placement("j", "c", (0,)), Placement("k", "B", (0,))]


def test_placement_backfills_only_what_cannot_delay_the_reserved_job() -> None:
    # 4 GPUs: 2 free, 2 busy for at most 100 s more; a 4-GPU job waits for them.
    free, capacity, ends = {"n": [0, 1]}, {"n": 4}, {"n": [100.0, 100.0]}
    pending = [
        PendingJob("big", 4),
        PendingJob("short", 1, timeout=50.0),  # ends before the big job can start
        PendingJob("long", 1, timeout=500.0),  # would delay it
        PendingJob("untimed", 1),  # might run forever
    ]
    assert plan_placements(pending, free, capacity, ends) == [Placement("short", "n", (0,))]
    # the big job waits for the later of the two: a short job still fits before it
    assert plan_placements(pending, free, capacity, {"n": [None, 100.0]}) == [
        Placement("short", "n", (0,))
    ]
    # running jobs without a timeout may end any moment: nothing is backfilled
    assert plan_placements(pending, free, capacity, {"n": [None, None]}) == []


def test_a_gang_takes_the_tightest_nodes_one_member_a_node_all_at_once() -> None:
    free = {"a": [0, 1, 2, 3], "b": [0, 1], "c": [1, 2, 3]}
    capacity = {"a": 4, "b": 2, "c": 4}
    plans = plan_placements([PendingJob("gang", 2, nodes=2)], free, capacity)
    assert plans == [
        Placement("gang", "b", (0, 1), rank=0),
        Placement("gang", "c", (1, 2), rank=1),
    ]
    # a gang wider than the nodes that hold it places no member at all
    assert plan_placements([PendingJob("wide", 2, nodes=4)], free, capacity) == []


def test_a_waiting_gang_holds_its_nodes_against_what_would_delay_it() -> None:
    # Given a 2 x 4 gang: b is free, a has 2 GPUs busy for at most 100 s more
    free = {"a": [0, 1], "b": [0, 1, 2, 3]}
    capacity, ends = {"a": 4, "b": 4}, {"a": [100.0, 100.0], "b": []}
    pending = [
        PendingJob("gang", 4, nodes=2),
        PendingJob("short", 1, timeout=50.0),  # ends before the gang can start
        PendingJob("long", 1, timeout=500.0),  # would delay it on either node
        PendingJob("untimed", 1),
    ]
    # Then only what ends before its start runs meanwhile, on the tighter node
    assert plan_placements(pending, free, capacity, ends) == [Placement("short", "a", (0,))]
    # and without the gang ahead of them, all three run
    assert len(plan_placements(pending[1:], free, capacity, ends)) == 3
