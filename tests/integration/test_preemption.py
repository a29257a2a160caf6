"""Preemption on a live stack: a short job of a user who used little stops a
`--preemptible` job of one who used much, starts on its GPUs, and the stopped job
resumes from its checkpoint ahead of the rest of the queue."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import env_for, make_settings, running_stack, ugro, wait_for_job
from ugro import Client, JobSpec, JobStatus
from ugro.jobs.lifecycle import ExitReason
from ugro.registry.usage import preempted_counts
from ugro.scheduling.fair_share import rank_queue
from ugro.scheduling.preemption import preempt_waiting
from ugro.settings import Settings
from ugro.web.cluster_rows import queue_rows

GATED = 'while [ ! -e "$UGRO_JOB_DIR/go" ]; do sleep 0.05; done'
# Saves a checkpoint on SIGTERM and exits once `saved` exists; resumed, says from
# what, then runs until `go`.
TRAINER = (
    'if [ -n "$UGRO_RESUME_FROM" ]; then echo "resumed from $(cat "$UGRO_RESUME_FROM")"; '
    'while [ ! -e "$UGRO_JOB_DIR/go" ]; do sleep 0.05; done; exit 0; fi; '
    'trap \'echo step-7 > "$UGRO_CHECKPOINT_DIR/ckpt"; '
    'while [ ! -e "$UGRO_JOB_DIR/saved" ]; do sleep 0.05; done; exit 143\' TERM; '
    "while true; do sleep 0.05; done"
)


@pytest.fixture
def two_gpus(tmp_path: Path, database_url: str) -> Iterator[Settings]:
    # (beat's own tick an hour away: the test runs its look when it means to)
    # (a grace the test's look at the preemption under way cannot outlast)
    settings = make_settings(
        tmp_path / "data",
        database_url,
        gpu_backend="fake:2",
        dispatch_interval=3600.0,
        stop_grace=60.0,
    )
    (settings.data_dir).mkdir(parents=True, exist_ok=True)
    (settings.data_dir / "cluster.toml").write_text(
        '[sharing]\norder = "shortest-first"\n\n'
        "[sharing.preemption]\nafter_minutes = 0\nmin_run_minutes = 0\n"
    )
    with running_stack(settings) as running:
        yield running


def client_as(settings: Settings, user: str) -> Client:
    return Client(settings.model_copy(update={"user": user}))


@pytest.mark.timeout(120)
def test_a_short_job_preempts_a_preemptible_one_which_resumes_first(two_gpus: Settings) -> None:
    env = env_for(two_gpus) | {"UGRO_USER": "alice"}
    submitted = ugro(
        two_gpus, "submit", "--name", "train", "--gpus", "2", "--preemptible", "--shell",
        "--", TRAINER, env=env,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    train_id = submitted.stdout.strip()
    with client_as(two_gpus, "alice") as alice, client_as(two_gpus, "bob") as bob:
        rt = alice.rt
        wait_for_job(alice, train_id, lambda j: j.status is JobStatus.RUNNING, 30)
        # Alice's own job waits behind her trainer, bob's short one after it.
        later = alice.submit(JobSpec(name="later", command=["true"], gpus=2))
        quick = bob.submit(JobSpec(name="quick", command=[GATED], shell=True, gpus=2, timeout=60))
        # A job not --preemptible is never stopped: alice's trainer is the victim.
        rank_queue(rt)
        assert preempt_waiting(rt) == [train_id]
        assert preempt_waiting(rt) == []  # one at a time
        shown = ugro(two_gpus, "status", quick.id, env=env_for(two_gpus))
        why = f"preempting: {train_id} stopping to free their GPUs"
        assert why in shown.stdout, shown
        # and so does the dashboard's queue
        queue = {row["id"]: row["why"] for row in queue_rows(bob)["waiting"]}
        assert queue[quick.id] == why, queue
        (rt.paths(train_id).root / "saved").touch()
        # Then bob's job runs on the trainer's GPUs, the trainer waits right behind
        # it, ahead of a job of bob's that fair share alone would put first
        wait_for_job(bob, quick.id, lambda j: j.status is JobStatus.RUNNING, 30)
        wait_for_job(alice, train_id, lambda j: j.status is JobStatus.QUEUED, 30)
        other = bob.submit(JobSpec(name="other", command=["true"], gpus=2))
        rank_queue(rt)
        pending = rt.live.redis.zrange(rt.live.keys.pending, 0, -1)
        assert pending == [train_id, other.id, later.id], pending
        # and the trainer resumes once bob's job ended, alice's other job last
        (rt.paths(quick.id).root / "go").touch()
        done = bob.wait([quick.id], timeout=60)
        assert done[0].status is JobStatus.FINISHED
        wait_for_job(alice, train_id, lambda j: j.status is JobStatus.RUNNING, 30)
        assert alice.get(later.id).status is JobStatus.QUEUED
        (rt.paths(train_id).root / "go").touch()
        [trained, last, _] = alice.wait([train_id, later.id, other.id], timeout=60)
        attempts = rt.registry.attempts(train_id)
        counted = preempted_counts(rt.registry, [train_id, later.id])
        console = rt.paths(train_id).root.joinpath("console.log").read_text()
    assert trained.status is JobStatus.FINISHED and last.status is JobStatus.FINISHED
    assert [a.exit_reason for a in attempts] == [ExitReason.PREEMPTED, ExitReason.OK]
    assert counted == {train_id: 1}  # (what max_per_job counts)
    # (its spec allows no retry: a preemption is not a failure)
    assert "resumed from step-7" in trained_log(two_gpus, train_id)
    assert f"requeued: preempted for {quick.id}" in console, console
    assert attempts[1].started_at is not None and last.started_at is not None
    assert attempts[1].started_at <= last.started_at
    assert done[0].started_at is not None and attempts[0].ended_at is not None
    assert attempts[0].ended_at <= done[0].started_at


def trained_log(settings: Settings, job_id: str) -> str:
    shown = ugro(settings, "logs", job_id, env=env_for(settings))
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


@pytest.fixture
def three_gpus_bob_capped(tmp_path: Path, database_url: str) -> Iterator[Settings]:
    settings = make_settings(
        tmp_path / "data", database_url, gpu_backend="fake:3", dispatch_interval=3600.0
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    (settings.data_dir / "cluster.toml").write_text(
        "[sharing.users.bob]\nmax_gpus = 2\n\n"
        "[sharing.preemption]\nafter_minutes = 0\nmin_run_minutes = 0\n"
    )
    with running_stack(settings) as running:
        yield running


@pytest.mark.timeout(120)
def test_a_job_its_quota_would_hold_back_preempts_nobody(three_gpus_bob_capped: Settings) -> None:
    settings = three_gpus_bob_capped
    with client_as(settings, "alice") as alice, client_as(settings, "bob") as bob:
        rt = alice.rt
        # Given alice's preemptible trainer on two GPUs, bob's job on the third
        train = alice.submit(
            JobSpec(name="train", command=[GATED], shell=True, gpus=2, preemptible=True)
        )
        wait_for_job(alice, train.id, lambda j: j.status is JobStatus.RUNNING, 30)
        holder = bob.submit(JobSpec(name="holder", command=[GATED], shell=True))
        wait_for_job(bob, holder.id, lambda j: j.status is JobStatus.RUNNING, 30)
        # When bob queues a short job of two GPUs, one more than his quota leaves him
        quick = bob.submit(JobSpec(name="quick", command=["true"], gpus=2, timeout=60))
        # Then it stops nobody: it could not start on the trainer's GPUs
        assert preempt_waiting(rt) == []
        assert alice.get(train.id).status is JobStatus.RUNNING
        # and once bob's other job ended, it may
        (rt.paths(holder.id).root / "go").touch()
        bob.wait([holder.id], timeout=30)
        assert preempt_waiting(rt) == [train.id]
        bob.wait([quick.id], timeout=60)
        wait_for_job(alice, train.id, lambda j: j.status is JobStatus.RUNNING, 30)
        (rt.paths(train.id).root / "go").touch()
        [trained] = alice.wait([train.id], timeout=60)
    assert trained.succeeded
