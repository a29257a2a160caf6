"""Shell completion of `ugro`: commands, options, job ids and node names."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import env_for, make_settings, registry_database, running_stack, ugro
from ugro import Client, JobSpec
from ugro.settings import Settings


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    root = tmp_path_factory.mktemp("completion")
    with (
        registry_database(root) as url,
        running_stack(make_settings(root / "data", url)) as running,
    ):
        yield running


def offered(settings: Settings, line: str) -> list[str]:
    """What bash would offer at the end of ``line`` (click's bash protocol: one
    ``type,value`` a line)."""
    words = line.split(" ")
    env = env_for(settings) | {
        "_UGRO_COMPLETE": "bash_complete",
        "COMP_WORDS": line,
        "COMP_CWORD": str(len(words) - 1),
    }
    done = ugro(settings, env=env, timeout=60)
    assert done.returncode == 0 and not done.stderr, done.stderr
    return [entry.split(",", 1)[1] for entry in done.stdout.splitlines() if entry]


@pytest.mark.timeout(60)
def test_job_ids_nodes_commands_and_options_are_completed(lab: Settings) -> None:
    # given a job that ran on the stack
    with Client(lab) as client:
        job = client.submit(JobSpec(name="done", command=["true"]))
        client.wait([job.id], timeout=30)
    # then a JOB argument offers its id, alone once its prefix is typed
    assert job.id in offered(lab, "ugro cancel ")
    assert offered(lab, f"ugro status {job.id[:6]}") == [job.id]
    assert offered(lab, "ugro rm zzz") == []
    # and --node the node whose workers report; commands and options complete too
    assert offered(lab, "ugro submit --node ") == ["testnode"]
    assert "top" in offered(lab, "ugro to")
    assert "--keep-tree" in offered(lab, "ugro rm --k")


@pytest.mark.timeout(30)
def test_completion_offers_nothing_quietly_where_nothing_runs(settings: Settings) -> None:
    # given a data dir where nothing ever ran, and no Redis
    # when a job id or a node is completed, then nothing is offered, and no error
    # shows, nor is a registry made for it
    assert offered(settings, "ugro cancel ") == []
    assert offered(settings, "ugro logs x --node ") == []
    assert not (settings.data_dir / "registry.sqlite3").exists()
