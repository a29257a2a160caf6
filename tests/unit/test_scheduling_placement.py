"""Placement decisions: pure data in, data out."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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


# The rules of the module's docstring written out plainly, node by node, to hold
# the indexed pass to them.


@dataclass
class _Held:
    shadow: float
    spare: int


def _earliest(need: int, free_now: int, busy_ends: Sequence[float | None]) -> _Held:
    ends = sorted(0.0 if end is None else max(0.0, end) for end in busy_ends)
    missing = need - free_now
    shadow = ends[missing - 1] if 0 < missing <= len(ends) else 0.0
    return _Held(shadow, free_now + sum(1 for end in ends if end <= shadow) - need)


def _held_until(
    need: int, free_now: int, busy_ends: Sequence[float | None], shadow: float
) -> _Held:
    ends = [0.0 if end is None else max(0.0, end) for end in busy_ends]
    own = _earliest(need, free_now, busy_ends)
    if shadow <= own.shadow:
        return own
    return _Held(shadow, free_now + sum(1 for end in ends if end <= shadow) - need)


def _plainly(
    pending: Sequence[PendingJob],
    free: Mapping[str, Sequence[int]],
    capacity: Mapping[str, int],
    busy_ends: Mapping[str, Sequence[float | None]] | None = None,
    headroom: Mapping[str, int] | None = None,
) -> list[Placement]:
    def before(job: PendingJob, held: _Held) -> bool:
        return job.timeout is not None and job.timeout <= held.shadow

    available = {node: sorted(indices) for node, indices in free.items()}
    ends = {node: list((busy_ends or {}).get(node, [])) for node in available}
    reserved: dict[str, _Held] = {}
    plans: list[Placement] = []
    left = dict(headroom or {})
    for job in pending:
        if not any(available.values()):
            break
        need = job.gpus * job.nodes
        if any(left.get(account, need) < need for account in job.accounts):
            continue
        candidates = [n for n in available if job.node in (None, n)]
        fits = [n for n in candidates if len(available[n]) >= job.gpus]
        open_fits = [n for n in fits if n not in reserved]
        backfill = [
            n
            for n in fits
            if n in reserved and (before(job, reserved[n]) or job.gpus <= reserved[n].spare)
        ]
        choice = sorted(open_fits, key=lambda n: (len(available[n]), n))
        choice += sorted(backfill, key=lambda n: (len(available[n]), n))
        if job.nodes == 1 and open_fits:
            choice = choice[: len(open_fits)]
        if len(choice) >= job.nodes:
            for rank, node in enumerate(choice[: job.nodes]):
                taken = available[node][: job.gpus]
                available[node] = available[node][job.gpus :]
                ends[node] += [job.timeout] * job.gpus
                if node in reserved and not before(job, reserved[node]):
                    reserved[node].spare -= job.gpus
                plans.append(Placement(job.job_id, node, tuple(taken), rank))
            for account in job.accounts:
                if account in left:
                    left[account] -= need
            continue
        possible = [n for n in candidates if n not in reserved and capacity.get(n, 0) >= job.gpus]
        if len(possible) >= job.nodes:
            soonest = sorted(
                possible, key=lambda n: (_earliest(job.gpus, len(available[n]), ends[n]).shadow, n)
            )[: job.nodes]
            shadow = max(_earliest(job.gpus, len(available[n]), ends[n]).shadow for n in soonest)
            for node in soonest:
                reserved[node] = _held_until(job.gpus, len(available[node]), ends[node], shadow)
    return plans


def _random_pass(rng: random.Random) -> tuple[Any, ...]:
    names = rng.sample(
        ["a", "B", "b", "n1", "n10", "n2", "n9", "gpu-1", "gpu_1"], rng.randint(1, 9)
    )
    capacity = {n: rng.choice([1, 2, 4, 8, 8]) for n in names}
    free: dict[str, list[int]] = {}
    ends: dict[str, list[float | None]] = {}
    for node in names:
        busy = rng.randint(0, capacity[node])
        indices = list(range(capacity[node]))
        rng.shuffle(indices)
        free[node] = indices[busy:]
        # on a tie of ends, one GPU's end shared; some without a timeout; a few past
        ends[node] = [
            rng.choice([None, -5.0, 100.0, 3600.0, rng.uniform(0, 7200)]) for _ in range(busy)
        ]
    if rng.random() < 0.2:
        capacity.pop(rng.choice(names))  # a node whose capacity is unknown
    accounts = ["user:a", "user:b", "group:g"]
    pending = [
        PendingJob(
            f"j{i}",
            rng.choice([1, 1, 1, 2, 3, 4, 8]),
            rng.choice(names) if rng.random() < 0.1 else None,
            rng.choice([None, 50.0, 100.0, 3600.0, rng.uniform(1, 9000)]),
            rng.choice([1, 1, 1, 1, 2, 3]),
            tuple(rng.sample(accounts, rng.randint(0, 2))),
        )
        for i in range(rng.randint(1, 40))
    ]
    headroom = {a: rng.randint(0, 16) for a in accounts if rng.random() < 0.3}
    return pending, free, capacity, ends if rng.random() < 0.9 else None, headroom or None


def test_the_indexed_pass_places_as_the_rules_written_out_plainly_do() -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    for _ in range(3000):
        args = _random_pass(rng)
        assert plan_placements(*args) == _plainly(*args), f"seed {seed}: {args}"


def test_an_eta_moves_the_reservation_but_spare_gpus_are_counted_by_the_timeouts() -> None:
    # n0's two busy GPUs run at most 100 s more, but are expected to end in 10; n1's in 50
    free = {"n0": [2, 3], "n1": [2, 3]}
    capacity = {"n0": 4, "n1": 4}
    latest: dict[str, list[float | None]] = {"n0": [100.0, 100.0], "n1": [50.0, 50.0]}
    expected: dict[str, list[float | None]] = {"n0": [10.0, 10.0], "n1": [50.0, 50.0]}
    pending = [
        PendingJob("big", 3, timeout=60),  # fits nowhere now
        PendingJob("pair", 2, timeout=30),
        PendingJob("long", 1, timeout=1000),
    ]
    # By the timeouts alone, big holds n1 (free soonest at 50) and pair takes n0
    plans = plan_placements(pending, free, capacity, latest)
    assert [(p.job_id, p.node) for p in plans] == [("pair", "n0"), ("long", "n1")]
    # By the ETAs, big holds n0 (free at 10): pair takes n1; long could take n0's
    # spare GPU only if the ETAs were sure (by the timeouts n0 has none spare then)
    plans = plan_placements(pending, free, capacity, latest, expected_ends=expected)
    assert [(p.job_id, p.node) for p in plans] == [("pair", "n1")]
