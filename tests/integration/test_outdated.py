"""Outdated, for ugro's own jobs: a job that finished more than UGRO_OUTDATED_AFTER
ago is shown ``outdated`` by `ugro list` (and found by ``--status outdated``) and
`ugro status`, as a view of a finished job, never a lifecycle state."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import env_for, make_settings, running_stack, ugro
from ugro import Client, JobSpec, JobStatus
from ugro.settings import Settings

PY = sys.executable


def _with_window(settings: Settings, seconds: float) -> dict[str, str]:
    """A user's shell with UGRO_OUTDATED_AFTER set to ``seconds``."""
    return {**env_for(settings), "UGRO_OUTDATED_AFTER": str(seconds)}


@pytest.mark.timeout(90)
def test_a_job_finished_longer_ago_than_the_window_is_shown_outdated(
    tmp_path: Path, database_url: str
) -> None:
    # Given a job that finished, one that failed and one still running
    settings = make_settings(tmp_path / "data", database_url)
    with running_stack(settings), Client(settings) as client:
        done = client.submit(JobSpec(name="done", command=[PY, "-c", "print('ok')"]))
        broke = client.submit(JobSpec(name="broke", command=[PY, "-c", "raise SystemExit(3)"]))
        client.wait([done.id, broke.id], timeout=60)
        running = client.submit(
            JobSpec(name="running", command=[PY, "-c", "import time; time.sleep(60)"])
        )
        fresh, old = _with_window(settings, 86400), _with_window(settings, 0.001)

        # When the window has not passed: the finished job is finished
        listed = json.loads(ugro(settings, "list", "--json", env=fresh).stdout)
        shown = {job["name"]: job["shown_status"] for job in listed}
        assert shown["done"] == "finished" and shown["broke"] == "failed"
        none = ugro(settings, "list", "--status", "outdated", env=fresh)
        assert none.returncode == 0 and done.id not in none.stdout

        # When it has: outdated in the list, its filter and the job's status
        table = ugro(settings, "list", "--status", "outdated", env=old)
        assert table.returncode == 0, table.stderr
        assert done.id in table.stdout and "outdated" in table.stdout
        assert broke.id not in table.stdout and running.id not in table.stdout
        listed = json.loads(ugro(settings, "list", "--json", env=old).stdout)
        shown = {job["name"]: job["shown_status"] for job in listed}
        assert shown["done"] == "outdated" and shown["broke"] == "failed"
        assert {job["name"]: job["status"] for job in listed}["done"] == "finished"
        status = ugro(settings, "status", done.id, env=old)
        assert status.returncode == 0, status.stderr
        assert ["status", "outdated"] in [line.split() for line in status.stdout.splitlines()]
        data = json.loads(ugro(settings, "status", done.id, "--json", env=old).stdout)
        assert data["shown_status"] == "outdated" and data["status"] == "finished"
        # A finished job is still found as finished: outdated is how it is seen
        finished = ugro(settings, "list", "--status", "finished", env=old)
        assert done.id in finished.stdout
        # Then its lifecycle state is untouched
        assert client.get(done.id).status is JobStatus.FINISHED
        client.cancel(running.id)
