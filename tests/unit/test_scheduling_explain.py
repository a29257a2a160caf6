"""Why a queued job waits: one sentence, from what dispatch sees (plain data)."""

from __future__ import annotations

from ugro.live.worker_info import WorkerInfo
from ugro.scheduling.explain import why_waiting
from ugro.scheduling.planning import GpuView, view_of


def _workers(node: str, count: int, blocked: dict[int, str] | None = None) -> list[WorkerInfo]:
    blocked = blocked or {}
    return [WorkerInfo(node, i, 100 + i, node, 0.0, blocked.get(i)) for i in range(count)]


def _view(
    workers: list[WorkerInfo],
    leased: dict[tuple[str, int], str | None] | None = None,
    in_registry: dict[str, dict[int, str]] | None = None,
) -> GpuView:
    return view_of(workers, leased or {}, in_registry or {})


def test_a_job_waiting_out_its_retry_backoff_says_for_how_long() -> None:
    view = _view(_workers("n1", 2))
    assert why_waiting(1, None, view, 0, 42.4) == "retry backoff: may start in 42 s"
    assert why_waiting(1, None, view, 0, -3.0) == "retry backoff: may start in 0 s"


def test_with_no_worker_up_it_says_how_to_start_them() -> None:
    why = why_waiting(1, None, _view([]), 0, None)
    assert why == "no GPU worker is up: start them with `ugro up` or `ugro worker`"


def test_a_job_pinned_to_a_node_without_workers_names_that_node() -> None:
    why = why_waiting(1, "n9", _view(_workers("n1", 4)), 0, None)
    assert why == "node 'n9' has no GPU worker up"


def test_a_job_larger_than_every_node_names_the_largest() -> None:
    view = _view(_workers("n1", 2) + _workers("n2", 4))
    why = why_waiting(8, None, view, 0, None)
    assert why == "needs 8 GPUs on one node; the largest node up has 4"
    # pinned: only its node counts
    why = why_waiting(3, "n1", view, 0, None)
    assert why == "needs 3 GPUs on one node; the largest node up has 2"


def test_a_job_that_fits_later_says_what_is_free_and_how_many_wait_ahead() -> None:
    # Given two nodes, n1's GPUs leased in Redis or held by a job in the registry
    # (Redis wiped, its worker not back yet)
    workers = _workers("n1", 2) + _workers("n2", 2)
    view = _view(workers, {("n1", 0): "a|tok", ("n2", 0): "b|tok"}, {"n1": {1: "c"}})
    assert view.free == {"n1": [], "n2": [1]}
    # Then a two-GPU job waits, with the free GPUs of each node and the queue ahead
    why = why_waiting(2, None, view, 3, None)
    assert why == (
        "waiting for 2 free GPU(s) on one node (free now: n1 0, n2 1); 3 job(s) ahead in the queue"
    )
    # and one with nothing ahead does not mention the queue
    assert why_waiting(2, "n2", view, 0, None) == (
        "waiting for 2 free GPU(s) on one node (free now: n2 1)"
    )


def test_gpus_another_program_keeps_busy_are_named_with_why() -> None:
    workers = _workers("n1", 2, {1: "2 GB used by another program"})
    workers += _workers("n2", 1, {0: "node unhealthy (disk 99%)"})
    why = why_waiting(2, None, _view(workers), 0, None)
    assert why == (
        "waiting for 2 free GPU(s) on one node (free now: n1 1, n2 0)"
        "; GPU 1 on n1: 2 GB used by another program; GPU 0 on n2: node unhealthy (disk 99%)"
    )


def test_a_gang_says_how_many_nodes_it_needs_and_how_many_are_ready() -> None:
    workers = _workers("n1", 2) + _workers("n2", 2) + _workers("n3", 1)
    view = _view(workers, {("n1", 0): "a|tok"})
    assert why_waiting(2, None, view, 0, None, nodes_wanted=3) == (
        "needs 2 GPUs on each of 3 nodes; 2 node(s) up have that many"
    )
    assert why_waiting(2, None, view, 1, None, nodes_wanted=2) == (
        "waiting for 2 free GPU(s) on each of 2 nodes, all at once (1 ready; free now: n1 1,"
        " n2 2); 1 job(s) ahead in the queue"
    )
