"""Fair share's order: least usage per share first, users' sweeps interleaved."""

from __future__ import annotations

import math

import pytest

from ugro.registry.usage import Used
from ugro.scheduling.fair_share import Queued, decayed_usage, fair_order

DAY = 86400.0


def test_a_second_of_use_counts_half_after_a_half_life() -> None:
    now = 100 * DAY
    fresh = decayed_usage([Used("a", 2, now - 10, now)], now, 7 * DAY)
    old = decayed_usage([Used("a", 2, now - 7 * DAY - 10, now - 7 * DAY)], now, 7 * DAY)
    assert fresh["a"] == pytest.approx(20, rel=1e-4)
    assert old["a"] == pytest.approx(10, rel=1e-4)
    running = decayed_usage([Used("b", 1, now - 5, None)], now, 7 * DAY)
    assert running["b"] == pytest.approx(5, rel=1e-4)
    assert math.isclose(sum(decayed_usage([], now, DAY).values()), 0)


def test_the_user_who_used_less_starts_first_then_the_sweeps_interleave() -> None:
    queued = [Queued(f"a{i}", "alice", 3600) for i in range(3)]
    queued += [Queued(f"b{i}", "bob", 3600) for i in range(3)]
    order = fair_order(queued, {"alice": 100.0}, {})
    assert order == ["b0", "a0", "b1", "a1", "b2", "a2"]


def test_one_user_keeps_submission_order_and_shares_weigh() -> None:
    queued = [Queued(f"a{i}", "alice", 10) for i in range(4)]
    assert fair_order(queued, {"alice": 1e9}, {}) == ["a0", "a1", "a2", "a3"]
    both = [Queued("a0", "alice", 10), Queued("a1", "alice", 10), Queued("b0", "bob", 10)]
    # bob has used as much, but has twice alice's share: his job goes first
    assert fair_order(both, {"alice": 50, "bob": 50}, {"bob": 2.0})[0] == "b0"


def test_usage_counts_by_group_when_shares_are_by_group() -> None:
    now = 100 * DAY
    used = [Used("a", 1, now - 10, now, "vision"), Used("b", 2, now - 10, now, "vision")]
    assert decayed_usage(used, now, 7 * DAY, by="group") == {"vision": pytest.approx(30, rel=1e-4)}
