"""The progress scan on beat, against a real stack: progress recorded for a real
trainer, and a run that stops writing is found stuck, stopped and requeued."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.conftest import ROOT, make_settings, running_stack, ugro, wait_for_job, wait_until
from ugro import Client, JobSpec, JobStatus
from ugro.settings import Settings

PY = sys.executable


def _trainer(name: str, epochs: int, *args: str, max_retries: int = 0) -> JobSpec:
    """The example trainer for ``epochs`` epochs, with more of its flags."""
    train = str(ROOT / "examples" / "train.py")
    return JobSpec(
        name=name,
        epochs=epochs,
        max_retries=max_retries,
        command=[PY, train, "--epochs", str(epochs), *args],
    )


@pytest.mark.timeout(120)
def test_progress_is_recorded_and_a_stuck_run_is_stopped_and_requeued(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(
        tmp_path / "data", database_url, stuck_after=2.0, progress_interval=1.0
    )
    with running_stack(settings), Client(settings) as client:
        trainer = client.submit(_trainer("trainer", 3, "--epoch-seconds", "0.5"))
        quiet = client.submit(
            JobSpec(
                name="quiet",
                max_retries=1,
                command=[PY, "-c", "import time; print('started', flush=True); time.sleep(600)"],
            )
        )
        [done] = client.wait(trainer.id, timeout=60)
        assert done.succeeded
        progress_file = done.job_dir / "progress.json"
        wait_until(
            lambda: (
                progress_file.exists()
                and json.loads(progress_file.read_text())["completed_epochs"] == 3
            ),
            30,
            "the final progress",
        )
        # The file is in the progress plan's format, ugro's own fields beside it
        written = json.loads(progress_file.read_text())
        assert written["progress_percentage"] == 100.0 and written["runner_type"] == "trainer"
        assert isinstance(written["start_time"], float) and written["status"] == "finished"
        assert isinstance(written["best_score"], dict) and written["best_score"]
        status = json.loads(ugro(settings, "status", trainer.id, "--json").stdout)
        progress = status["progress"]
        assert progress["runner_type"] == "trainer" and progress["percent"] == 100.0
        assert progress["best_score"] is not None and status["run_status"] == "finished"
        assert "100%" in ugro(settings, "list").stdout

        stuck = wait_for_job(client, quiet.id, lambda j: j.done, 60)
        assert stuck.status is JobStatus.FAILED and stuck.exit_reason == "stuck"
        attempts = client.rt.registry.attempts(quiet.id)
        assert [a.exit_reason for a in attempts] == ["stuck", "stuck"]
        kinds = [e.kind for e in client.rt.registry.events(quiet.id)]
        assert kinds.count("stuck") == 2 and kinds.count("requeued") == 1
        assert "stuck: no log or metric changed" in (stuck.job_dir / "console.log").read_text()


@pytest.mark.timeout(120)
def test_a_crashed_trainer_is_relaunched_and_resumes_from_its_checkpoint(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(tmp_path / "data", database_url, progress_interval=1.0)
    with running_stack(settings), Client(settings) as client:
        job = client.submit(_trainer("crashy", 4, "--crash-at-epoch", "2", max_retries=1))
        [done] = client.wait(job.id, timeout=60)
        assert done.succeeded and done.attempt == 2
        first = (done.job_dir / "logs" / "attempt_1" / "training.log").read_text()
        second = (done.job_dir / "logs" / "attempt_2" / "training.log").read_text()
        assert "simulated crash at epoch 2" in first
        assert "resumed from" in second and "epoch_1.npz at epoch 2" in second
        assert sorted(p.name for p in done.job_dir.glob("epoch_*")) == [
            "epoch_0",
            "epoch_1",
            "epoch_2",
            "epoch_3",
        ]
        progress_file = done.job_dir / "progress.json"
        wait_until(
            lambda: progress_file.exists() and json.loads(progress_file.read_text())["complete"],
            30,
            "its progress",
        )
        assert json.loads(progress_file.read_text())["completed_epochs"] == 4


@pytest.mark.timeout(120)
def test_a_running_job_shows_its_progress_before_the_first_scan_reaches_it(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(tmp_path / "data", database_url, progress_interval=3600.0)
    with running_stack(settings), Client(settings) as client:
        job = client.submit(_trainer("long", 40, "--epoch-seconds", "0.5"))
        epoch_1 = client.get(job.id).job_dir / "epoch_1"
        wait_until(epoch_1.exists, 60, "two epochs")
        assert client.rt.registry.get_job(job.id).progress is None  # not scanned yet
        [listed] = json.loads(ugro(settings, "list", "--json").stdout)
        assert listed["status"] == "running" and listed["run_status"] == "running"
        assert listed["progress"]["completed_epochs"] >= 2
        assert listed["progress"]["total_epochs"] == 40
        assert "%" in ugro(settings, "list").stdout
        client.cancel(job.id)


def test_a_scan_that_read_a_job_running_does_not_overwrite_its_final_progress(
    settings: Settings, live_redis: redis.Redis
) -> None:
    # Given a running job, read by a progress scan before its worker ended it
    from ugro.progress.jobs import _refresh
    from ugro.progress.scan import Scanner
    from ugro.registry.models import utcnow
    from ugro.runtime import Runtime
    from ugro.scheduling.submit import queued_row

    rt = Runtime.open(settings)
    try:
        spec = JobSpec(name="raced", command=["true"])
        row = {**queued_row("raced-1", spec, utcnow()), "status": "running", "attempt": 1}
        rt.registry.create_jobs([row])
        rt.paths("raced-1").create({"job_id": "raced-1"})
        seen_running = rt.registry.get_job("raced-1")
        # When the worker records the end with its final progress first
        final = json.dumps({"status": "finished", "complete": True})
        ended = rt.registry.transition(
            "raced-1", JobStatus.FINISHED, expect=[JobStatus.RUNNING], progress=final
        )
        assert ended
        _refresh(rt, Scanner(3600, 86400), seen_running, time.time())
        # Then the scan's finding of a running job is dropped: the end's stands
        assert rt.registry.get_job("raced-1").progress == final
    finally:
        rt.close()
