"""A dispatch pass writes its placements to the registry together: one transaction,
one commit, each job still its own compare-and-set (queued -> placed)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import POSTGRES, drop_keys, make_settings, registry_database
from ugro.jobs.lifecycle import JobStatus
from ugro.ops.redis_server import EmbeddedRedis
from ugro.registry.models import utcnow
from ugro.registry.placing import JobPlacement
from ugro.runtime import Runtime
from ugro.scheduling.dispatch import dispatch_pending


@pytest.fixture(params=["sqlite", "postgresql"])
def rt(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    """A runtime on a real Redis and a real registry: SQLite, and PostgreSQL when it
    runs here."""
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'registry.sqlite3'}"
        elif POSTGRES:
            url = stack.enter_context(registry_database(tmp_path))
        else:
            pytest.skip("no PostgreSQL server here")
        settings = make_settings(tmp_path / "data", url)
        if settings.embedded_redis:
            server = EmbeddedRedis(settings)
            server.start()
            stack.callback(server.stop)
        stack.callback(drop_keys, settings)
        runtime = stack.enter_context(contextlib.closing(Runtime.open(settings)))
        yield runtime


def _queued(rt: Runtime, *job_ids: str) -> None:
    rt.registry.create_jobs(
        [
            {
                "id": job_id, "name": job_id, "kind": "command", "status": "queued",
                "priority": 0, "gpus": 1, "node": None, "attempt": 0, "max_retries": 0,
                "spec": "{}", "created_at": utcnow(),
            }
            for job_id in job_ids
        ]
    )  # fmt: skip
    for job_id in job_ids:
        rt.live.enqueue(job_id, 0, 1, None)


def _count_writes(rt: Runtime) -> list[int]:
    """How many steps each registry transaction that places jobs has, from now on."""
    connections = rt.registry.connections
    write = connections.write
    placing: list[int] = []

    def counted(*steps: Any, rows: bool = False) -> list[Any]:
        sql = [str(stmt) for stmt, _ in steps]
        if any(s.startswith("UPDATE") and "placement_token" in s for s in sql):
            placing.append(len(steps))
        return write(*steps, rows=rows)

    connections.write = counted  # type: ignore[method-assign]
    return placing


def test_a_pass_places_its_jobs_in_one_commit_and_passes_over_one_cancelled_meanwhile(
    rt: Runtime,
) -> None:
    # Given three queued jobs and four free GPUs, the second job cancelled in the
    # registry while it still waits in Redis's queue
    for index in range(4):
        rt.live.register_worker("n", index, pid=1, host="h")
    _queued(rt, "a-1", "b-1", "c-1")
    assert rt.registry.transition("b-1", JobStatus.CANCELLED, expect=[JobStatus.QUEUED])
    transactions = _count_writes(rt)
    # When a pass runs
    placed = dispatch_pending(rt)
    # Then the other two are placed, all three written in one transaction (of one
    # statement, but on SQLite, where each job has its own)
    assert placed == 2
    assert transactions == [3 if rt.registry.connections.keep else 1]
    rows = {job_id: rt.registry.get_job(job_id) for job_id in ("a-1", "b-1", "c-1")}
    assert rows["b-1"].status == JobStatus.CANCELLED.value
    assert rows["b-1"].placement_token is None and rows["b-1"].node is None
    held: dict[int, str] = {}
    for job_id in ("a-1", "c-1"):
        row = rows[job_id]
        assert (row.status, row.node) == (JobStatus.PLACED.value, "n")
        assert row.placed_at is not None and row.placement_token
        [gpu] = [int(i) for i in (row.gpu_indices or "").strip("[]").split(",")]
        held[gpu] = f"{job_id}|{row.placement_token}"
        # and each is out of the queue, placed in Redis, its message on its GPU's queue
        assert rt.live.job(job_id)["status"] == JobStatus.PLACED.value
        key = rt.job_message(job_id, row.placement_token, "n", [gpu]).key
        assert rt.live.redis.llen(key) == 1
    # and the cancelled one's GPU is leased to nobody, the job out of the queue
    holders = rt.live.leases.lease_holders("n", [0, 1, 2, 3])
    assert {i: h for i, h in holders.items() if h is not None} == held
    assert rt.live.redis.zscore(rt.keys.pending, "b-1") is None
    assert rt.live.redis.get(rt.keys.dispatch_lock) is None


def test_place_jobs_places_each_still_queued_job_and_refuses_the_others(rt: Runtime) -> None:
    # Given two queued jobs, one of them a gang job, and one already running
    _queued(rt, "a-2", "g-2", "r-2")
    assert rt.registry.transition("r-2", JobStatus.RUNNING, expect=[JobStatus.QUEUED])
    placed_at = utcnow()
    gang = {"placement_token": "tg", "node": "n", "gpu_indices": "[1]"}
    gang["members"] = '[["n", [1]], ["m", [0]]]'
    placements = [
        JobPlacement("a-2", {"placement_token": "ta", "node": "n", "gpu_indices": "[0]"}),
        JobPlacement("g-2", gang),
        JobPlacement("r-2", {"placement_token": "tr", "node": "n", "gpu_indices": "[2]"}),
    ]
    for placement in placements:
        placement.values["placed_at"] = placed_at
    transactions = _count_writes(rt)
    writes = rt.live.redis.pipeline(transaction=True)
    # When they are placed together
    placed = rt.place_jobs(placements, writes)
    writes.execute()
    # Then the queued two are, each with its own columns, in one transaction
    assert placed == [True, True, False]
    # (a statement for each set of columns, or on SQLite for each job)
    assert transactions == [3 if rt.registry.connections.keep else 2]
    a, g, r = (rt.registry.get_job(job_id) for job_id in ("a-2", "g-2", "r-2"))
    assert (a.status, a.placement_token, a.gpu_indices, a.members) == ("placed", "ta", "[0]", None)
    assert (g.status, g.placement_token, g.members) == ("placed", "tg", '[["n", [1]], ["m", [0]]]')
    assert (r.status, r.placement_token) == ("running", None)
    # and Redis shows the placed ones placed, and the other as it was
    assert rt.live.job("a-2")["status"] == "placed" and rt.live.job("a-2")["gpus_held"] == "[0]"
    assert rt.live.job("g-2")["status"] == "placed"
    assert rt.live.job("r-2")["status"] == "queued"
