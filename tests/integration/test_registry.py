"""The registry's kept SQLite connections: no stale reads, nothing half-written."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError

from ugro.errors import TransitionError
from ugro.jobs.dependencies import HOLD_AFTER
from ugro.jobs.lifecycle import JobStatus
from ugro.registry.models import utcnow
from ugro.registry.store import Registry
from ugro.runtime import claim_values

pytestmark = pytest.mark.timeout(60)


def _job(job_id: str) -> dict[str, object]:
    return {
        "id": job_id,
        "name": job_id,
        "kind": "command",
        "status": JobStatus.QUEUED.value,
        "gpus": 1,
        "spec": "{}",
        "created_at": utcnow(),
    }


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'registry.sqlite3'}"


def test_a_kept_sqlite_connection_reads_what_another_process_wrote_since(sqlite_url: str) -> None:
    # Given two registries on one file, the first having read (its connection kept)
    reader, writer = Registry(sqlite_url), Registry(sqlite_url)
    writer.create_job(**_job("j1"))
    assert reader.get_job("j1").status == JobStatus.QUEUED.value
    assert reader.connections.keep and len(reader.connections._idle) == 1
    # When the other changes the job
    assert writer.transition("j1", JobStatus.PLACED, expect=[JobStatus.QUEUED], node="n")
    # Then the kept connection sees it: it held no snapshot between the calls
    assert reader.get_job("j1").status == JobStatus.PLACED.value
    assert reader.statuses(["j1", "nope"]) == {"j1": JobStatus.PLACED.value}
    # and no reader stands in the way of a full checkpoint of the write-ahead log
    with writer.engine.connect() as conn:
        busy, _, _ = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
    assert busy == 0
    reader.close()
    writer.close()


def test_a_failed_call_writes_nothing_and_its_connection_is_not_kept(sqlite_url: str) -> None:
    registry = Registry(sqlite_url)
    registry.create_job(**_job("j1"))
    kept = list(registry.connections._idle)
    # When a batch of which one row is a duplicate is inserted
    with pytest.raises(IntegrityError):
        registry.create_jobs([_job("j2"), _job("j1")])
    # Then none of it is there, and the connection the error left is closed, not kept
    assert [row.id for row in registry.list_jobs()] == ["j1"]
    assert kept[0].closed and kept[0] not in registry.connections._idle
    # and the next call works on a fresh one
    registry.create_job(**_job("j3"))
    assert {row.id for row in registry.list_jobs()} == {"j1", "j3"}
    registry.close()
    assert not registry.connections._idle


def test_threads_each_have_a_connection_of_their_own(sqlite_url: str) -> None:
    registry = Registry(sqlite_url)
    ids = [f"j{i}" for i in range(8)]
    registry.create_jobs([_job(job_id) for job_id in ids])
    start, errors = threading.Barrier(len(ids)), []

    def place(job_id: str) -> None:
        start.wait()
        try:
            for _ in range(20):
                assert registry.transition(job_id, JobStatus.PLACED, expect=[JobStatus.QUEUED])
                assert registry.transition(job_id, JobStatus.QUEUED, expect=[JobStatus.PLACED])
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=place, args=(job_id,)) for job_id in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert set(registry.statuses(ids).values()) == {JobStatus.QUEUED.value}
    # no more connections kept than were ever in use at once
    assert 1 <= len(registry.connections._idle) <= len(ids)
    registry.close()


def test_a_read_of_more_ids_than_one_statement_takes_finds_them_all(database_url: str) -> None:
    registry = Registry(database_url)
    ids = [f"j{i:04d}" for i in range(2100)]
    registry.create_jobs([_job(job_id) for job_id in ids])
    found = registry.list_jobs(ids=ids)
    assert sorted(row.id for row in found) == ids
    # newest first across the statements too
    stamps = [row.created_at for row in found]
    assert stamps == sorted(stamps, reverse=True)
    assert registry.statuses(ids) == dict.fromkeys(ids, JobStatus.QUEUED.value)
    registry.close()


def test_a_queued_job_placed_and_claimed_at_once_is_running_its_first_attempt(
    database_url: str,
) -> None:
    registry = Registry(database_url)
    registry.create_jobs([_job("pc1"), _job("pc2")])
    placed = {"node": "n", "gpu_indices": "[1]", "placed_at": utcnow()}
    claim = {"started_at": utcnow(), "finished_at": None, "exit_code": None, "error": None}
    row = registry.place_and_claim("pc1", "tok1", placed, claim)
    assert row is not None
    assert (row.status, row.attempt, row.node, row.gpu_indices) == ("running", 1, "n", "[1]")
    assert row.placement_token == "tok1" and row.started_at is not None
    assert row.started_at.tzinfo is not None  # (read back as UTC, as every read is)
    assert registry.get_job("pc1").status == JobStatus.RUNNING.value
    # Only a queued job: one placed, running or cancelled meanwhile is left as it is
    assert registry.place_and_claim("pc1", "tok2", placed, claim) is None
    assert registry.get_job("pc1").placement_token == "tok1"
    assert registry.transition("pc2", JobStatus.CANCELLED, expect=[JobStatus.QUEUED])
    assert registry.place_and_claim("pc2", "tok3", placed, claim) is None
    assert registry.get_job("pc2").status == JobStatus.CANCELLED.value
    registry.close()


def test_the_end_of_an_attempt_moves_on_no_later_attempt(database_url: str) -> None:
    # Given a job in its second attempt (its first was lost and run again)
    registry = Registry(database_url)
    registry.create_jobs([_job("late")])
    placed = {"node": "n", "gpu_indices": "[0]", "placed_at": utcnow()}
    claim = {"started_at": utcnow()}
    assert registry.place_and_claim("late", "t1", placed, claim) is not None
    assert registry.transition("late", JobStatus.LOST, expect=[JobStatus.RUNNING], of_attempt=1)
    assert registry.transition("late", JobStatus.QUEUED, expect=[JobStatus.LOST], of_attempt=1)
    second = registry.place_and_claim("late", "t2", placed, claim)
    assert second is not None and second.attempt == 2
    # When the first attempt's worker comes back and ends it
    running = [JobStatus.RUNNING]
    assert not registry.transition("late", JobStatus.QUEUED, expect=running, of_attempt=1)
    ended = {"ended_at": utcnow(), "exit_reason": "lost"}
    assert not registry.end_attempt_with_status("late", 1, ended, JobStatus.FINISHED, running)[0]
    # Then the second attempt runs on, and its own end is what moves the job
    assert registry.get_job("late").status == JobStatus.RUNNING.value
    assert registry.end_attempt_with_status("late", 2, ended, JobStatus.FINISHED, running)[0]
    registry.close()


def test_a_forbidden_move_raises_transition_error_and_writes_nothing(database_url: str) -> None:
    # Given a job that finished and one that is queued
    registry = Registry(database_url)
    registry.create_jobs([_job("done"), _job("waits")])
    placed = {"node": "n", "gpu_indices": "[0]", "placed_at": utcnow()}
    assert registry.place_and_claim("done", "tok", placed, claim_values()) is not None
    registry.start_attempt(
        job_id="done", number=1, node="n", host="h", gpu_indices="[0]", pid=7, started_at=utcnow()
    )
    ended = {"ended_at": utcnow(), "exit_code": 0, "exit_signal": None, "exit_reason": "ok"}
    assert registry.end_attempt_with_status(
        "done", 1, ended, JobStatus.FINISHED, [JobStatus.RUNNING], finished_at=utcnow()
    ) == (True, [])
    before = _everything(registry)
    # When each of the registry's status writes is asked for a move the table forbids
    attempt_again = {**ended, "exit_reason": "error"}
    forbidden: list[Callable[[], object]] = [
        lambda: registry.transition("done", JobStatus.QUEUED, expect=[JobStatus.FINISHED]),
        lambda: registry.claim("done", [JobStatus.FINISHED], "tok", **claim_values()),
        lambda: registry.transition("waits", JobStatus.FAILED, expect=[JobStatus.QUEUED]),
        lambda: registry.end_attempt_with_status(
            "done", 1, attempt_again, JobStatus.LOST, [JobStatus.FINISHED, JobStatus.RUNNING]
        ),
    ]
    for write in forbidden:
        with pytest.raises(TransitionError, match="does not allow"):
            write()
    # Then nothing changed: not the jobs, not the attempt's end
    assert _everything(registry) == before
    assert registry.get_job("done").status == JobStatus.FINISHED.value
    # while an allowed move of the same job goes through as ever
    assert registry.transition("waits", JobStatus.CANCELLED, expect=[JobStatus.QUEUED])
    registry.close()


def _everything(registry: Registry) -> list[Any]:
    """Every job's row and attempts' rows, as read back."""
    rows = registry.list_jobs()
    attempts = [[_vars_of(a) for a in registry.attempts(row.id)] for row in rows]
    return [[_vars_of(row) for row in rows], attempts]


def _job_life(registry: Registry, started: datetime, ended: datetime) -> list[Any]:
    """A job's submit, place-and-claim, attempt start and end, and what each returned."""
    registry.create_jobs([{**_job(job_id), "created_at": started} for job_id in ("a1", "a2")])
    # (one held waiting on a1, which its end reads)
    after = {**_job("a3"), "created_at": started, "hold": HOLD_AFTER}
    registry.create_jobs([after], [{"job_id": "a3", "on_job": "a1", "kind": "after"}])
    placed = {"node": "n", "gpu_indices": "[0, 1]", "placed_at": started}
    claim = {**claim_values(), "started_at": started}
    claimed = registry.place_and_claim("a1", "tok", placed, claim)
    held = registry.held_gpus()
    registry.start_attempt(
        job_id="a1", number=1, node="n", host="h", gpu_indices="[0, 1]", pid=7, started_at=started
    )
    attempt = {"ended_at": ended, "exit_code": 0, "exit_signal": None, "exit_reason": "ok"}
    changed = registry.end_attempt_with_status(
        "a1", 1, attempt, JobStatus.FINISHED, [JobStatus.RUNNING], finished_at=ended, exit_code=0
    )
    assert changed == (True, ["a3"])
    cancelled = registry.transition("a2", JobStatus.CANCELLED, expect=[JobStatus.QUEUED])
    again = registry.transition("a2", JobStatus.CANCELLED, expect=[JobStatus.QUEUED])
    return [_vars_of(claimed), held, changed, cancelled, again, _vars_of(registry.get_job("a1"))]


def _vars_of(row: object) -> dict[str, object]:
    return {k: v for k, v in vars(row).items() if not k.startswith("_")}


def _stored(registry: Registry) -> list[Any]:
    """The jobs table's rows as SQLite holds them (datetimes as their text)."""
    with registry.engine.connect() as conn:
        return list(conn.exec_driver_sql("SELECT * FROM ugro_jobs ORDER BY id").all())


def test_the_direct_sqlite_path_writes_and_reads_as_sqlalchemy_does(tmp_path: Path) -> None:
    # Given a registry whose hot statements run on the sqlite3 cursor, and one whose
    # statements all go through SQLAlchemy
    direct = Registry(f"sqlite:///{tmp_path / 'direct.sqlite3'}")
    through = Registry(f"sqlite:///{tmp_path / 'through.sqlite3'}")
    through.connections.direct = False
    started, ended = utcnow(), utcnow()
    # When each runs a job's life
    seen = [_job_life(registry, started, ended) for registry in (direct, through)]
    # Then both returned the same, and every hot statement took the direct path
    assert seen[0] == seen[1]
    assert seen[0][0]["started_at"] == started and seen[0][0]["started_at"].tzinfo is not None
    assert direct.connections._direct and all(direct.connections._direct.values())
    assert not through.connections._direct
    # and SQLAlchemy's own reads find the same rows, stored the same way
    for read in (
        lambda r: [_vars_of(row) for row in r.list_jobs()],
        lambda r: [_vars_of(row) for row in r.attempts("a1")],
        _stored,
    ):
        assert read(direct) == read(through)
    # A batch's rows are bound by name, whatever the order of their keys
    rows = [{**_job("b1"), "priority": 2}, dict(reversed({**_job("b2"), "priority": 3}.items()))]
    direct.create_jobs(rows)
    assert {row.id: row.priority for row in direct.list_jobs(ids=["b1", "b2"])} == {
        "b1": 2,
        "b2": 3,
    }
    direct.close()
    through.close()
