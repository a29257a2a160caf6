"""`ugro top`: the jobs table and the GPU grid, redrawn in place."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import make_settings, registry_database, running_stack, ugro, wait_for_job
from ugro import Client, JobSpec
from ugro.settings import Settings

GATED = 'while [ ! -e "$UGRO_JOB_DIR/go" ]; do sleep 0.05; done'


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    root = tmp_path_factory.mktemp("top")
    with (
        registry_database(root) as url,
        running_stack(make_settings(root / "data", url)) as running,
    ):
        yield running


@pytest.mark.timeout(60)
def test_top_draws_the_running_job_and_the_gpu_grid_then_exits(lab: Settings) -> None:
    with Client(lab) as client:
        # given a running job and one that finished
        done = client.submit(JobSpec(name="earlier", command=["true"]))
        client.wait([done.id], timeout=30)
        job = client.submit(JobSpec(name="watched", command=[GATED], shell=True))
        try:
            wait_for_job(client, job.id, lambda j: j.status.value == "running", 30)
            # when `ugro top` draws three frames, its output a pipe
            shown = ugro(lab, "top", "--iterations", "3", "--interval", "0.1", timeout=60)
        finally:
            (client.rt.paths(job.id).root / "go").touch()
            client.wait([job.id], timeout=30)
    # then it exits by itself, with the last frame: both jobs, the running one first,
    # and the node's GPU grid with the job on its GPU
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "1 running" in text and "GPUs busy" in text, text
    assert text.index(job.id) < text.index(done.id), text
    row = next(line for line in text.splitlines() if line.lstrip().startswith(job.id))
    assert "running" in row and "watched" in row, row
    assert "GPU 0" in text and "GPU 3" in text, text
    grid = text[text.index("GPU 0") :]
    assert "testnode" in grid and "busy" in grid and job.id in grid, text
    # one frame only is printed to a pipe: no redraws in a log
    assert text.count("ugro top") == 1, text
