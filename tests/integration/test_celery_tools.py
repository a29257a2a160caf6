"""Celery's own commands on ugro's app: `celery -A ugro status`, `inspect active`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import (
    BIN,
    env_for,
    make_settings,
    registry_database,
    running_stack,
    wait_for_job,
)
from ugro import Client, JobSpec
from ugro.settings import Settings

GATED = 'while [ ! -e "$UGRO_JOB_DIR/go" ]; do sleep 0.05; done'


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    root = tmp_path_factory.mktemp("celery-tools")
    with registry_database(root) as url:
        # the embedded Redis, whatever UGRO_TEST_REDIS_URL says
        settings = make_settings(root / "data", url, redis_url=None, redis_prefix="ugro")
        with running_stack(settings) as running:
            yield running


def celery(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the `celery` command as a user of the stack's shell would."""
    return subprocess.run(
        [str(BIN / "celery"), "-A", "ugro", *args],
        env=env_for(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.timeout(60)
def test_celery_status_and_inspect_active_see_the_workers_and_the_running_job(
    lab: Settings,
) -> None:
    # given a running job on the stack's embedded Redis
    with Client(lab) as client:
        job = client.submit(JobSpec(name="held", command=[GATED], shell=True))
        try:
            wait_for_job(client, job.id, lambda j: j.status.value == "running", 30)
            # when Celery's own tools ask the cluster
            status = celery(lab, "status", "--timeout", "2")
            active = celery(lab, "inspect", "active", "--timeout", "2")
        finally:
            (client.rt.paths(job.id).root / "go").touch()
            client.wait([job.id], timeout=30)
    # then every worker answers, and the GPU worker running the job says so
    assert status.returncode == 0, status.stderr
    for worker in ("agent@testnode", "gpu0@testnode", "gpu3@testnode"):
        assert f"{worker}: OK" in status.stdout, status.stdout
    assert active.returncode == 0, active.stderr
    assert "ugro.run_job" in active.stdout and job.id in active.stdout, active.stdout


@pytest.mark.timeout(30)
def test_importing_ugro_makes_no_celery_app(settings: Settings) -> None:
    # given a fresh interpreter with the user's environment, when it imports ugro,
    # then Celery is not loaded; `ugro.app` makes the app, once
    script = (
        "import sys, ugro\n"
        "assert 'celery' not in sys.modules\n"
        "assert ugro.app is ugro.app is ugro.celery\n"
        "print(ugro.app.conf.broker_transport_options['global_keyprefix'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env_for(settings),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{settings.redis_prefix}:"
