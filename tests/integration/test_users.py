"""Who submitted a job: recorded, listed by, and asked about before another acts."""

from __future__ import annotations

import json

import pytest

from tests.conftest import env_for, ugro
from ugro.settings import Settings


@pytest.mark.timeout(90)
def test_jobs_are_attributed_listed_by_user_and_guarded_from_others(stack: Settings) -> None:
    def as_user(user: str, *args: str) -> tuple[int, str, str]:
        env = env_for(stack) | {"UGRO_USER": user}
        done = ugro(stack, *args, env=env)
        return done.returncode, done.stdout, done.stderr

    hold = ["--", "sleep", "60"]
    code, alice_job, _ = as_user("alice", "submit", "--name", "a", "--group", "vision", *hold)
    assert code == 0
    code, bob_job, _ = as_user("bob", "submit", "--name", "b", *hold)
    assert code == 0
    alice_job, bob_job = alice_job.strip(), bob_job.strip()

    code, out, _ = as_user("alice", "list", "--json", "--mine")
    assert [job["id"] for job in json.loads(out)] == [alice_job]
    assert json.loads(out)[0]["user"] == "alice" and json.loads(out)[0]["group"] == "vision"
    code, out, _ = as_user("alice", "list", "--json", "--user", "bob")
    assert [job["id"] for job in json.loads(out)] == [bob_job]
    code, out, _ = as_user("bob", "list", "--json", "--group", "vision")
    assert [job["id"] for job in json.loads(out)] == [alice_job]

    # Acting on another's job asks for --force, and changes nothing without it
    code, _, err = as_user("alice", "cancel", "--no-wait", bob_job)
    assert code == 2 and f"{bob_job} is bob's: add --force to cancel it" in err, err
    code, _, err = as_user("alice", "cancel", bob_job, "--force")
    assert code == 0, err
    code, _, err = as_user("alice", "cancel", alice_job)
    assert code == 0, err
