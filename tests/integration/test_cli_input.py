"""Bad input is refused with a message naming the field, exit 2, and nothing left behind."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from tests.conftest import env_for, ugro
from ugro.registry.store import Registry
from ugro.settings import Settings

CASES = [
    (["--gpus", "-1"], "gpus"),
    (["--gpus", "lots"], "gpus"),
    (["--gpus", "1000"], "gpus"),
    (["--name", "../x"], "name"),
    (["--name", "/etc"], "name"),
    (["--name", "x" * 300], "name"),
    (["--name", "tab\there"], "name"),
    (["--kind", "dance"], "kind"),
    (["--timeout", "soon"], "timeout"),
    (["--env", "NOEQUALS"], "env"),
    (["--env", "1X=2"], "env"),
    # hostile text at each door: newlines, shell metacharacters, 10 kB, bad UTF-8
    (["--name", "a\nb"], "name"),
    (["--name", "x;rm -rf ~"], "name"),
    (["--name", "$(reboot)"], "name"),
    (["--name", "x" * 10_000], "name"),
    (["--name", "caf\udce9"], "name"),
    (["--tag", "../up"], "tag"),
    (["--tag", "a b"], "tag"),
    (["--env", "A-B=1"], "env"),
    (["--env", "A=caf\udce9"], "env"),
    (["--env", "UGRO_JOB_ID=x"], "env"),
    (["--workdir", "/nonexistent/../../x"], "workdir"),
    (["--nodes", "0"], "nodes"),
    (["--nodes", "2", "--node", "n1"], "node"),
    (["--launch", "rank"], "launch"),
]


@pytest.mark.timeout(120)
def test_bad_submissions_leave_nothing_behind(settings: Settings, live_redis: redis.Redis) -> None:
    for extra, field in CASES:
        args = ["submit", "--name", "ok", *extra, "--", "python", "train.py"]
        result = ugro(settings, *args)
        assert result.returncode == 2, (extra, result.stderr)
        assert f"{field}" in result.stderr, (extra, result.stderr)
        assert result.stdout == ""
    empty = ugro(settings, "submit", "--name", "ok", "--")
    assert empty.returncode == 2 and "command" in empty.stderr.lower()
    not_text = ugro(settings, "submit", "--name", "ok", "--", "python", "caf\udce9.py")
    assert not_text.returncode == 2, not_text.stderr
    assert "argument 1 is not valid UTF-8 text" in not_text.stderr

    # nothing in the tree, the registry or Redis
    jobs_dir = settings.jobs_dir
    assert not jobs_dir.exists() or list(jobs_dir.iterdir()) == []
    registry = Registry(settings.effective_database_url)
    assert registry.list_jobs() == []
    registry.close()
    assert live_redis.keys(f"{settings.redis_prefix}:*") == []


def test_an_unknown_job_id_and_a_path_as_job_id_are_refused(
    settings: Settings, live_redis: redis.Redis
) -> None:
    missing = ugro(settings, "status", "nosuchjob")
    assert missing.returncode == 2 and "no job 'nosuchjob'" in missing.stderr
    escape = ugro(settings, "logs", "../../etc/passwd")
    assert escape.returncode == 2 and "not a valid job id" in escape.stderr


def test_a_command_needing_redis_says_how_to_start_it(embedded_settings: Settings) -> None:
    result = ugro(embedded_settings, "nodes")
    assert result.returncode == 3
    assert "ugro up" in result.stderr


def test_a_mistyped_option_is_refused_not_made_part_of_the_command(
    settings: Settings, live_redis: redis.Redis, tmp_path: Path
) -> None:
    for typo, meant in (("--gpu", "--gpus"), ("--priorty", "--priority"), ("--depends-on", None)):
        result = ugro(settings, "submit", "--name", "t", typo, "2", "--", "python", "train.py")
        assert result.returncode == 2, (typo, result.stdout, result.stderr)
        assert f"No such option '{typo}'" in result.stderr
        if meant is not None:
            assert meant in result.stderr
    missing = tmp_path / "no-such-dir"
    result = ugro(settings, "submit", "--name", "t", "--workdir", str(missing), "--", "true")
    assert result.returncode == 2 and str(missing) in result.stderr
    assert not settings.jobs_dir.exists() or list(settings.jobs_dir.iterdir()) == []
    assert live_redis.keys(f"{settings.redis_prefix}:*") == []


def test_a_bad_setting_in_the_environment_is_refused_naming_its_variable(
    settings: Settings,
) -> None:
    # Given a shell whose settings hold a value of the wrong type (the variable's
    # name in lower case, as the environment may spell it)
    env = env_for(settings)
    env["ugro_lease_ttl"] = "half a minute"
    # When any command reads them, it says which variable is wrong, and nothing else
    result = ugro(settings, "list", env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: invalid setting: UGRO_LEASE_TTL: ")
    assert result.stdout == ""
