"""Two users' sweeps on one GPU: ranked by fair share, the one who used less starts
first, then they interleave; `ugro share` says what the registry says."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import env_for, make_settings, running_stack, ugro
from ugro import Client, JobSpec, JobStatus
from ugro.live.clock import server_time
from ugro.registry.usage import recent_attempts
from ugro.scheduling.fair_share import decayed_usage, rank_queue
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
