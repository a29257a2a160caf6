"""Quotas from the cluster file's [sharing] table, on a live stack: a user at her
GPU quota waits, saying so, while others use the GPUs she cannot; a submit over
a queued quota is refused naming it; the quota holds at every sampled moment."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import env_for, make_settings, running_stack, ugro, wait_for_job
from ugro import Client, JobSpec, JobStatus
from ugro.errors import SpecError
from ugro.registry.usage import held_by_owner
from ugro.settings import Settings

GATED = 'while [ ! -e "$UGRO_JOB_DIR/go" ]; do sleep 0.05; done'
SHARING = """
[sharing.users.alice]
max_gpus = 2
max_queued = 3
"""


@pytest.fixture
def lab(tmp_path: Path, database_url: str) -> Iterator[Settings]:
    data = tmp_path / "data"
    data.mkdir()
    (data / "cluster.toml").write_text(SHARING)
    with running_stack(make_settings(data, database_url)) as running:
        yield running


def as_user(settings: Settings, user: str) -> Client:
    return Client(settings.model_copy(update={"user": user}))


def gated(name: str) -> JobSpec:
    return JobSpec(name=name, command=[GATED], shell=True)


def running(client: Client, job_id: str) -> None:
    wait_for_job(client, job_id, lambda job: job.status is JobStatus.RUNNING, timeout=30)


class HeldSampler(threading.Thread):
    """Samples the GPUs each user holds (placed and running jobs) until stopped."""

    def __init__(self, client: Client) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.most: dict[str, int] = {}
        self.samples = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.02):
            for (user, _), gpus in held_by_owner(self.client.rt.registry).items():
                self.most[user or ""] = max(self.most.get(user or "", 0), gpus)
            self.samples += 1


@pytest.mark.timeout(120)
def test_a_user_at_her_quota_waits_while_others_run(lab: Settings) -> None:
    with as_user(lab, "alice") as alice, as_user(lab, "bob") as bob:
        sampler = HeldSampler(alice)
        sampler.start()
        try:
            # Given alice holds her 2 GPUs and bob the other 2
            a1, a2 = (alice.submit(gated(f"a{n}")) for n in (1, 2))
            b1, b2 = (bob.submit(gated(f"b{n}")) for n in (1, 2))
            for job in (a1, a2, b1, b2):
                running(alice, job.id)
            # When she queues another, and a GPU of bob's frees with his job queued after hers
            a3 = alice.submit(gated("a3"))
            b3 = bob.submit(gated("b3"))
            (alice.rt.paths(b1.id).root / "go").touch()
            # Then bob's job takes it, and hers waits, saying why
            running(bob, b3.id)
            assert alice.get(a3.id).status is JobStatus.QUEUED
            reason = alice.why_waiting(a3.id)
            assert reason is not None and reason.startswith("quota: alice has 2 of 2 GPUs"), reason
            shown = ugro(lab, "status", a3.id, env=env_for(lab))
            assert "alice has 2 of 2 GPUs" in shown.stdout, shown.stdout + shown.stderr

            # And a submit over her queued quota is refused, naming it
            alice.submit_many([gated("a4"), gated("a5")])
            with pytest.raises(SpecError, match="may have 3 jobs queued; 3 are"):
                alice.submit(gated("a6"))
            env = env_for(lab) | {"UGRO_USER": "alice"}
            refused = ugro(lab, "submit", "--name", "a6", "--", "true", env=env)
            assert refused.returncode != 0 and "may have 3 jobs queued" in refused.stderr
            with pytest.raises(SpecError, match="quota of user 'alice' is 2 at once"):
                alice.submit(JobSpec(name="wide", command=["true"], gpus=3))

            # When one of hers ends, her next starts
            (alice.rt.paths(a1.id).root / "go").touch()
            running(alice, a3.id)
            shown = ugro(lab, "share", "--json", env=env_for(lab))
            users = {row["user"]: row for row in json.loads(shown.stdout)}
            assert (users["alice"]["running_gpus"], users["alice"]["queued"]) == (2, 2)
            assert (users["alice"]["max_gpus"], users["alice"]["max_queued"]) == (2, 3)
            assert users["bob"]["max_gpus"] is None
            for job in alice.list(user="alice") + bob.list(user="bob"):
                (alice.rt.paths(job.id).root / "go").touch()
            ended = alice.wait([job.id for job in alice.list()], timeout=60)
        finally:
            sampler.stopped.set()
            sampler.join()
    assert all(job.status is JobStatus.FINISHED for job in ended)
    assert sampler.samples > 10
    assert sampler.most["alice"] == 2, sampler.most
    # (bob has no quota: a job placed as it is submitted may show for a moment
    # before a GPU taken meanwhile sends it to the queue)
    assert sampler.most["bob"] >= 2, sampler.most
