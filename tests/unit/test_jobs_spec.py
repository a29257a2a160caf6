"""Job specs: what is refused, and with which message."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ugro.errors import SpecError
from ugro.jobs.spec import JobSpec, check_job_id, parse_duration, parse_spec

GOOD = {"name": "lr-3e-4", "command": ["python", "train.py"]}


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"colour": "red"}, "colour", "unknown field"),
        ({"gpus": -1}, "gpus", "greater than or equal to 1"),
        ({"gpus": 0}, "gpus", "greater than or equal to 1"),
        ({"gpus": 1000}, "gpus", "less than or equal to 64"),
        ({"gpus": "two"}, "gpus", "valid integer"),
        ({"command": []}, "command", "at least 1"),
        ({"command": [""]}, "command", "empty"),
        ({"name": "../x"}, "name", "not a safe name"),
        ({"name": "/etc"}, "name", "not a safe name"),
        ({"name": "x" * 300}, "name", "not a safe name"),
        ({"name": "a\x1bb"}, "name", "not a safe name"),
        ({"name": ""}, "name", "not a safe name"),
        ({"kind": "dance"}, "kind", "'train' or 'eval'"),
        ({"timeout": "soon"}, "timeout", "not a duration"),
        ({"env": {"1BAD": "x"}}, "env", "not a valid environment variable name"),
        ({"env": {"UGRO_JOB_ID": "x"}}, "env", "set by ugro"),
        ({"working_dir": "relative/dir"}, "working_dir", "absolute path"),
        ({"node": "../etc"}, "node", "not a safe node name"),
    ],
)
def test_a_bad_spec_is_refused_naming_the_field(
    change: dict[str, object], field: str, words: str
) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec({**GOOD, **change})
    message = str(caught.value)
    assert f"{field}:" in message or f"{field}." in message
    assert words in message


def test_a_good_spec_keeps_its_values() -> None:
    spec = parse_spec({**GOOD, "gpus": "2", "timeout": "2h", "env": {"A": "1"}})
    assert spec.gpus == 2 and spec.timeout == 7200.0
    assert spec.argv() == ["python", "train.py"]


def test_shell_is_only_used_when_asked() -> None:
    spec = parse_spec({**GOOD, "command": ["echo $HOME | wc"], "shell": True})
    assert spec.argv() == ["/bin/sh", "-c", "echo $HOME | wc"]
    assert JobSpec(**GOOD).argv() == ["python", "train.py"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1.5d", 129600), (30, 30)],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("job_id", ["../x", "/etc/passwd", "a/b", ".hidden", "", "x" * 200])
def test_a_job_id_cannot_escape_the_tree(job_id: str) -> None:
    with pytest.raises(SpecError):
        check_job_id(job_id)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"command": ["python", "a\x00b"]}, "argument 1 contains a NUL byte"),
        ({"env": {"A": "x\x00y"}}, "the value of 'A' contains a NUL byte"),
        ({"working_dir": "/tmp/a\x00b"}, "the path contains a NUL byte"),
    ],
)
def test_a_nul_byte_is_refused_wherever_it_comes(fields: dict[str, object], named: str) -> None:
    spec = {"name": "n", "command": ["python"]} | fields
    with pytest.raises(ValidationError, match=named):
        JobSpec(**spec)  # type: ignore[arg-type]
