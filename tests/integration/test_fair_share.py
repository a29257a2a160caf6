"""Two users' sweeps on one GPU: ranked by fair share, the one who used less starts
first, then they interleave; `ugro share` says what the registry says."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import env_for, make_settings, running_stack, ugro, wait_for_job, wait_until
from ugro import Client, JobSpec, JobStatus
from ugro.live.clock import server_time
from ugro.registry.usage import recent_attempts, submitted_at
from ugro.scheduling.fair_share import decayed_usage, rank_queue, shortest_first
from ugro.settings import Settings

GATED = 'while [ ! -e "$UGRO_JOB_DIR/go" ]; do sleep 0.05; done'


@pytest.fixture
def one_gpu(tmp_path: Path, database_url: str) -> Iterator[Settings]:
    # (beat's own tick an hour away: the test ranks the queue when it means to)
    settings = make_settings(
        tmp_path / "data", database_url, gpu_backend="fake:1", dispatch_interval=3600.0
    )
    with running_stack(settings) as running:
        yield running


def client_as(settings: Settings, user: str) -> Client:
    return Client(settings.model_copy(update={"user": user}))


@pytest.mark.timeout(120)
def test_the_user_who_used_less_starts_first_and_the_sweeps_interleave(
    one_gpu: Settings,
) -> None:
    with client_as(one_gpu, "alice") as alice, client_as(one_gpu, "bob") as bob:
        # Given alice used the GPU a moment ago and bob did not
        [used] = alice.wait(alice.submit(JobSpec(name="warmup", command=["sleep", "1"])).id)
        assert used.succeeded
        blocker = alice.submit(JobSpec(name="blocker", command=[GATED], shell=True))
        alice_sweep = alice.submit_array(JobSpec(name="a", command=["true"]), range(3))
        bob_sweep = bob.submit_array(JobSpec(name="b", command=["true"]), range(3))
        # When the queue is ranked and the GPU frees
        assert rank_queue(alice.rt) > 0
        (alice.rt.paths(blocker.id).root / "go").touch()
        tasks = alice.wait([alice_sweep.id, bob_sweep.id], timeout=60)
    # Then bob's first task started first, and the two alternated
    starts = sorted(tasks, key=lambda t: t.started_at or 0)
    assert [t.user for t in starts] == ["bob", "alice"] * 3, [(t.id, t.user) for t in starts]

    shown = ugro(one_gpu, "share", "--json", env=env_for(one_gpu))
    assert shown.returncode == 0, shown.stderr
    users = {row["user"]: row for row in json.loads(shown.stdout)}
    with Client(one_gpu) as client:
        now = server_time(client.rt.live.redis)
        half_life = one_gpu.fair_share_half_life
        expected = decayed_usage(recent_attempts(client.rt.registry, 0), now, half_life)
        assert all(t.status is JobStatus.FINISHED for t in tasks)
    for user, used_s in expected.items():
        assert users[user]["usage_gpu_hours"] == pytest.approx(used_s / 3600, abs=1e-3)
    assert users["bob"]["usage_gpu_hours"] < users["alice"]["usage_gpu_hours"]


@pytest.mark.timeout(60)
def test_shortest_first_ranks_shorter_declared_lengths_first_until_one_waited_too_long(
    one_gpu: Settings,
) -> None:
    cluster = one_gpu.data_dir / "cluster.toml"
    bound_s = 3.6
    cluster.write_text(
        f'[sharing]\norder = "shortest-first"\nstarvation_hours = {bound_s / 3600}\n'
    )
    with client_as(one_gpu, "alice") as alice, client_as(one_gpu, "bob") as bob:
        live = alice.rt.live

        def queue() -> list[str]:
            rank_queue(alice.rt)
            return [str(job_id) for job_id in live.redis.zrange(live.keys.pending, 0, -1)]

        blocker = alice.submit(JobSpec(name="blocker", command=[GATED], shell=True))
        wait_for_job(alice, blocker.id, lambda job: job.status is JobStatus.RUNNING, timeout=30)
        # Given alice's job of 3 hours has been queued over the bound
        long = alice.submit(JobSpec(name="long", command=["true"], timeout=3 * 3600))
        wait_until(lambda: waited(alice, long.id) > bound_s, 10, "the bound to pass")
        # when bob (who used nothing) queues one of 3 hours, and alice one of 10 minutes
        bobs = bob.submit(JobSpec(name="bobs", command=["true"], timeout=3 * 3600))
        assert queue() == [long.id, bobs.id]
        short = alice.submit(JobSpec(name="short", command=["true"], timeout=600))
        # Then the long one goes first, then the shorter length (a job queued since
        # the last ranking ranked with the rest)
        assert queue() == [long.id, short.id, bobs.id]
        # And with the bound far away: the shorter length first, and fair share
        # ordering those of 3 hours (bob's first)
        cluster.write_text('[sharing]\norder = "shortest-first"\n')
        assert queue() == [short.id, bobs.id, long.id]
        (alice.rt.paths(blocker.id).root / "go").touch()


def waited(client: Client, job_id: str) -> float:
    at = submitted_at(client.rt.registry, [job_id])[job_id]
    return server_time(client.rt.live.redis) - at


def test_shortest_first_keeps_the_fair_order_within_a_length_class() -> None:
    fair = ["untimed", "day", "hour", "ninety-minutes", "two-hours", "starved"]
    timeouts = {"day": 86400.0, "hour": 3600.0, "ninety-minutes": 5400.0, "two-hours": 7200.0}
    waited = {"starved": 10.0, "day": 5.0}
    order = shortest_first(fair, {**timeouts, "untimed": None, "starved": 86400.0}, waited, 9.0)
    assert order == ["starved", "hour", "ninety-minutes", "two-hours", "day", "untimed"]
