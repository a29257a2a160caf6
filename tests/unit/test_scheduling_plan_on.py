"""Dispatch's ``plan_on``: when a pass needs the running jobs' ends, and that a
job waiting at the head keeps the node it reserved."""

from __future__ import annotations

import pytest

from ugro.live.dispatch_state import PendingEntry
from ugro.scheduling.planning import GpuView, plan_on

HOUR = 3600.0


def _cluster() -> GpuView:
    """n0: 8 GPUs busy for ten hours more. n1: 7 busy for 600 s more, one free."""
    return GpuView(
        free={"n0": [], "n1": [7]},
        capacity={"n0": 8, "n1": 8},
        held={"n0": dict.fromkeys(range(8), "long"), "n1": dict.fromkeys(range(7), "short")},
    )


def _ends(jobs: list[str]) -> dict[str, float | None]:
    return {job: {"long": 10 * HOUR, "short": 600.0}[job] for job in jobs}


@pytest.mark.timeout(10)
def test_a_job_behind_a_waiting_one_does_not_take_the_gpu_it_reserved() -> None:
    # Given a whole-node job at the head, which n1 can start in 600 s, and behind it
    # a 1-GPU job of an hour that fits n1's free GPU
    head = PendingEntry("whole-node", 8, None, HOUR, 1)
    behind = PendingEntry("one-gpu", 1, None, HOUR, 1)
    # When a pass plans
    plans = plan_on(_cluster(), [head, behind], _ends)
    # Then the 1-GPU job waits: it would hold n1 past the head's start there.
    # (Planned without the ends, the head reserves n0, the first by name, as if its
    # GPUs freed at once, and the 1-GPU job takes n1's GPU: the head would wait
    # until n0's ten hours are over, and n1's free GPU be taken again each time.)
    assert plans == []


@pytest.mark.timeout(10)
def test_a_pass_that_places_a_head_of_the_queue_on_every_free_gpu_needs_no_ends() -> None:
    asked: list[list[str]] = []

    def ends(jobs: list[str]) -> dict[str, float | None]:
        asked.append(jobs)
        return _ends(jobs)

    # Given the head of the queue fits n1's free GPU, and a whole-node job waits behind it
    head = PendingEntry("one-gpu", 1, None, HOUR, 1)
    behind = PendingEntry("whole-node", 8, None, HOUR, 1)
    # When a pass plans, then the head takes the GPU, and no end was asked for
    plans = plan_on(_cluster(), [head, behind], ends)
    assert [(p.job_id, p.node, p.gpus) for p in plans] == [("one-gpu", "n1", (7,))]
    assert asked == []
