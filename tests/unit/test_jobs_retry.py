"""The retry policy: which ends are retried, how often, and after how long."""

from __future__ import annotations

import typing

import pytest

from ugro.jobs.lifecycle import ExitReason
from ugro.jobs.retry import RETRIED_BY_DEFAULT, RETRYABLE, backoff, should_retry
from ugro.jobs.spec import JobSpec

E = ExitReason


@pytest.mark.parametrize(
    ("reason", "retried"),
    [
        (E.ERROR, True),
        (E.KILLED, True),
        (E.TIMEOUT, True),
        (E.LOST, True),
        (E.STUCK, True),
        (E.OOM, False),  # the same OOM again wastes GPU hours: opt in
        (E.DISK_FULL, False),  # the disk is as full for the next attempt: opt in
        (E.CANCELLED, False),  # a person stopped it
        (E.OK, False),
        (E.INTERRUPTED, False),  # requeued by its worker's shutdown, not retried
    ],
)
def test_each_reason_is_retried_by_default_or_not(reason: ExitReason, retried: bool) -> None:
    assert should_retry(reason, 1, 3, [], deterministic=False) is retried
    assert (reason in RETRIED_BY_DEFAULT) is retried


def test_an_oom_is_retried_only_when_the_job_asks_for_it() -> None:
    assert not should_retry(E.OOM, 1, 3, ["timeout"], deterministic=False)
    assert should_retry(E.OOM, 1, 3, ["oom"], deterministic=False)
    # a job's spec holds the reasons as text, as it was submitted
    spec = JobSpec(name="big", command=["python", "train.py"], max_retries=2, retry_on=["oom"])
    assert should_retry(E.OOM, 2, spec.max_retries, spec.retry_on, deterministic=False)
    assert not should_retry(E.OOM, 3, spec.max_retries, spec.retry_on, deterministic=False)


def test_a_full_disk_is_retried_only_when_the_job_asks_for_it() -> None:
    assert not should_retry(E.DISK_FULL, 1, 3, ["oom"], deterministic=False)
    assert should_retry(E.DISK_FULL, 1, 3, ["disk_full"], deterministic=False)


def test_a_cancelled_job_is_not_retried_even_when_it_lists_every_reason() -> None:
    every = [reason.value for reason in RETRYABLE]
    assert not should_retry(E.CANCELLED, 1, 5, every, deterministic=False)


def test_a_command_that_could_not_start_is_never_retried() -> None:
    assert not should_retry(E.ERROR, 1, 5, ["error"], deterministic=True)


@pytest.mark.parametrize(
    ("failures", "max_retries", "retried"),
    [(1, 0, False), (1, 1, True), (2, 1, False), (3, 3, True), (4, 3, False)],
)
def test_retries_stop_after_max_retries(failures: int, max_retries: int, retried: bool) -> None:
    assert should_retry(E.ERROR, failures, max_retries, [], deterministic=False) is retried


def test_backoff_doubles_from_its_base_up_to_its_cap() -> None:
    assert [backoff(attempt, 10.0, 600.0) for attempt in range(1, 9)] == [
        10.0,
        20.0,
        40.0,
        80.0,
        160.0,
        320.0,
        600.0,
        600.0,
    ]
    assert backoff(0, 10.0, 600.0) == 10.0  # (no attempt counted yet: the base)
    assert backoff(100, 10.0, 600.0) == 600.0
    assert backoff(3, 0.0, 600.0) == 0.0


def test_what_a_spec_may_list_in_retry_on_is_what_the_policy_can_retry() -> None:
    listed = typing.get_args(typing.get_args(JobSpec.model_fields["retry_on"].annotation)[0])
    assert set(listed) == RETRYABLE == RETRIED_BY_DEFAULT | {E.OOM, E.DISK_FULL, E.IDLE}
