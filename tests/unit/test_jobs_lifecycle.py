"""The job lifecycle: the table lists exactly the moves the code makes, and every
status write is checked against it."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest
from sqlalchemy import String

from ugro.errors import TransitionError
from ugro.jobs.lifecycle import (
    TERMINAL,
    TRANSITIONS,
    ExitReason,
    JobStatus,
    allowed,
    sources_of,
    transition_sources,
)
from ugro.jobs.spec import JobSpec
from ugro.registry.models import AttemptRow, JobRow, MemberRow

Q, P, R = JobStatus.QUEUED, JobStatus.PLACED, JobStatus.RUNNING
F, X, C, L = JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.LOST

#: Every status write the code makes, as (from, to, who makes it).
MOVES_THE_CODE_MAKES = [
    (Q, P, "a dispatch pass places it (scheduling.dispatch.place)"),
    (Q, R, "the worker of its GPU places and claims it at once (Registry.place_and_claim)"),
    (Q, C, "cancelled while queued (Client.cancel)"),
    (P, R, "its worker claims it (execution.attempt.run_attempt)"),
    (P, Q, "its placement was never claimed (execution.reconcile)"),
    (P, C, "cancelled while placed (Client.cancel)"),
    (R, F, "it exited 0 (execution.attempt_end.record_end)"),
    (R, C, "it stopped on a cancel (execution.attempt_end.record_end)"),
    (R, X, "it failed with no retries left (execution.outcome.settle_failure)"),
    (R, Q, "interrupted, or failed with retries left (execution.outcome.requeue)"),
    (R, L, "its lease ran out (execution.reconcile.declare_lost)"),
    (L, Q, "lost with retries left, or retried by hand (execution.outcome, Client.retry)"),
    (L, X, "lost with no retries left (execution.outcome.settle_failure)"),
    (L, C, "cancelled while lost (Client.cancel)"),
    (X, Q, "retried by hand (Client.retry)"),
    (C, Q, "retried by hand (Client.retry)"),
]


def test_the_table_lists_exactly_the_moves_the_code_makes() -> None:
    table = {(old, new) for old, targets in TRANSITIONS.items() for new in targets}
    assert table == {(old, new) for old, new, _ in MOVES_THE_CODE_MAKES}
    assert set(TRANSITIONS) == set(JobStatus)


@pytest.mark.parametrize(("old", "new", "who"), MOVES_THE_CODE_MAKES)
def test_each_move_the_code_makes_passes_the_check(
    old: JobStatus, new: JobStatus, who: str
) -> None:
    assert allowed(old, new), who
    assert transition_sources(new, [old]) == (old,)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (F, R),  # a finished job runs again
        (F, Q),  # a finished job is never retried
        (Q, X),  # a job fails only once it ran
        (Q, L),  # a queued job holds no lease to lose
        (P, L),  # a placement never claimed goes back to the queue, not lost
        (P, F),  # a job finishes only once it ran
        (X, R),  # a failed job runs again only through the queue
        (R, P),  # a running job is never placed again without being queued
        (R, R),  # a claim of a job that runs already
    ],
)
def test_a_forbidden_move_raises_transition_error(old: JobStatus, new: JobStatus) -> None:
    assert not allowed(old, new)
    with pytest.raises(TransitionError, match=f"does not allow {old} -> {new}"):
        transition_sources(new, [old])


def test_one_forbidden_source_among_allowed_ones_refuses_the_whole_write() -> None:
    with pytest.raises(TransitionError, match=r"allow finished -> queued$"):
        transition_sources(Q, [X, C, F, L])


def test_sources_come_back_in_the_tables_order_whatever_the_callers() -> None:
    # (a statement is built once per shape: one order, one shape)
    assert transition_sources(Q, [L, C, X]) == transition_sources(Q, [X, L, C]) == (L, X, C)
    assert transition_sources(Q, (s for s in [P])) == (P,)


def test_no_expectation_means_every_status_the_table_lets_reach_the_new_one() -> None:
    assert set(transition_sources(C)) == sources_of(C) == {Q, P, R, L}
    assert set(transition_sources(R)) == {Q, P}


def test_a_write_that_expects_no_status_is_refused() -> None:
    with pytest.raises(TransitionError, match="must start from some status"):
        transition_sources(Q, [])


def test_terminal_statuses_are_left_only_by_a_retry_by_hand() -> None:
    assert {F, X, C} == TERMINAL and all(status.is_terminal for status in TERMINAL)
    assert not any(status.is_terminal for status in (Q, P, R, L))
    assert TRANSITIONS[F] == frozenset()
    assert TRANSITIONS[X] == TRANSITIONS[C] == {Q}


def test_every_status_is_reachable_from_a_new_job_and_every_job_can_end() -> None:
    # (submit creates a job queued, or placed when it leased its GPUs at once)
    reached, frontier = {Q, P}, [Q, P]
    while frontier:
        for new in TRANSITIONS[frontier.pop()]:
            if new not in reached:
                reached.add(new)
                frontier.append(new)
    assert reached == set(JobStatus)
    assert all(TRANSITIONS[status] & TERMINAL for status in set(JobStatus) - TERMINAL)


README = Path(__file__).resolve().parents[2] / "README.md"


def test_exit_reasons_are_the_values_stored_and_documented() -> None:
    assert [reason.value for reason in ExitReason] == [
        "ok",
        "error",
        "killed",
        "oom",
        "disk_full",
        "timeout",
        "cancelled",
        "stuck",
        "lost",
        "interrupted",
        "stopped",
        "dependency",
        "idle",
        "preempted",
    ]
    # Stored as their value, in the registry's columns, JSON and text alike
    for column in (
        JobRow.__table__.c.exit_reason,
        AttemptRow.__table__.c.exit_reason,
        MemberRow.__table__.c.exit_reason,
    ):
        length = typing.cast(String, column.type).length
        assert length is not None and all(len(reason) <= length for reason in ExitReason)
    assert json.dumps({"exit_reason": ExitReason.OOM}) == '{"exit_reason": "oom"}'
    assert f"{ExitReason.STUCK}" == str(ExitReason.STUCK) == "stuck"
    assert ExitReason("lost") is ExitReason.LOST and "lost" in set(ExitReason)
    # what a job may list in retry_on is among them
    retry_on = typing.get_args(typing.get_args(JobSpec.model_fields["retry_on"].annotation)[0])
    assert set(retry_on) <= set(ExitReason)
    # and the README's "Job status" names each one
    status_section = README.read_text().split("## Job status", 1)[1].split("\n## ", 1)[0]
    assert all(f"`{reason}`" in status_section for reason in ExitReason)
    # and the metadata schemas allow each one an attempt can end with (a job ended
    # for its dependency never ran: it has no metadata)
    schemas = Path(__file__).resolve().parents[2] / "ugro" / "schemas"
    top = json.loads((schemas / "metadata.schema.json").read_text())["$defs"]
    node = json.loads((schemas / "node_metadata.schema.json").read_text())["properties"]
    for enum in (top["exit_reason"]["enum"], node["exit_reason"]["enum"]):
        assert set(enum) - {None} == set(ExitReason) - {ExitReason.DEPENDENCY}
