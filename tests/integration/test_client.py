"""The working core end to end: `ugro up`, real GPU workers, real jobs, `ugro down`."""

from __future__ import annotations

import base64
import itertools
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, env_for, processes_of, ugro
from ugro import Client, Job, JobSpec, JobStatus
from ugro.errors import SpecError
from ugro.live.events import next_event
from ugro.settings import Settings

RECORD = str(ROOT / "tests" / "jobs" / "record.py")


def _job_task_events(pubsub: Any, timeout: float) -> dict[str, set[str]]:
    """Read Celery's task events as Flower does, until every job-running task seen
    has been received, started and succeeded and a second has passed without more:
    each task's event types.
    (The node agent's own tasks, a beat tick say, publish on the same channel: left
    out. Jobs a worker placed on its own GPU run in the task before: no task.)"""
    kinds: dict[str, set[str]] = {}
    job_tasks: set[str] = set()
    deadline = time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline, f"task events so far: {kinds}"
        message = next_event(pubsub, 1.0)
        if message is None:
            if job_tasks and all(len(kinds[task]) == 3 for task in job_tasks):
                break
            continue
        if message["type"] != "pmessage":
            continue
        events = json.loads(base64.b64decode(json.loads(message["data"])["body"]))
        for event in events:
            kinds.setdefault(event["uuid"], set()).add(event["type"])
            if event.get("name") == "ugro.run_job":
                job_tasks.add(event["uuid"])
    return {task: kinds[task] for task in job_tasks}


class _Monitor:
    """Every command the Redis server runs meanwhile, as MONITOR shows them."""

    _END = "ugro-test-monitor-end"

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self.commands: list[str] = []
        self._monitor = redis.monitor()
        self._monitor.__enter__()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            command = self._monitor.next_command()["command"]
            if self._END in command:
                return
            self.commands.append(command)

    def stop(self) -> list[str]:
        self.redis.echo(self._END)
        self._thread.join(timeout=10)
        self._monitor.__exit__(None, None, None)
        return self.commands


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.timeout(180)
def test_a_sweep_submitted_at_once_is_all_or_nothing_and_runs_each_job_once(
    stack: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "runs.jsonl"
    with Client(stack) as client:
        # Given a batch with one job that no node can hold
        bad = [
            JobSpec(name="fits", command=["true"]),
            JobSpec(name="huge", command=["true"], gpus=5),
        ]
        # When it is submitted, then it is refused whole: no job of it is left anywhere
        with pytest.raises(SpecError, match="gpus"):
            client.submit_many(bad)
        assert client.list() == []
        assert not stack.jobs_dir.exists() or list(stack.jobs_dir.iterdir()) == []
        # Given ten jobs for four GPUs, submitted in one call
        specs = [
            JobSpec(name=f"sweep{i}", command=[sys.executable, RECORD, str(out), "0.2"])
            for i in range(10)
        ]
        celery_events = client.rt.live.redis.pubsub()
        celery_events.psubscribe(f"{stack.redis_prefix}:*celeryev/task.multi")
        monitor = _Monitor(client.rt.live.redis)
        jobs = client.submit_many(specs)
        assert [job.name for job in jobs] == [f"sweep{i}" for i in range(10)]
        done = client.wait([job.id for job in jobs], timeout=120)
        # Flower hears of each job's task: received, started and succeeded
        tasks = _job_task_events(celery_events, timeout=30)
        celery_events.close()
        commands = monitor.stop()
    # Each job message left Redis as it was received: no unacked copy was kept of it
    # (ugro/transport/receipt_ack.py), while the messages themselves were seen going out
    job_messages = [c for c in commands if "ugro.run_job" in c]
    assert any(c.startswith("LPUSH") for c in job_messages)
    unacked = f"{stack.redis_prefix}:unacked"
    assert [c for c in job_messages if unacked in c] == []
    # ... nor any ack sent for one (an ack is an HDEL there; the node agent's own
    # tasks keep their copies, each HSET there and then gone with its ack)
    kept = [c for c in commands if c.startswith(f"HSET {unacked} ")]
    acked = [c for c in commands if c.startswith(f"HDEL {unacked} ")]
    assert len(acked) <= len(kept)
    assert len(tasks) >= 4  # one per GPU at least: the first four were sent at once
    assert all(
        kinds == {"task-received", "task-started", "task-succeeded"} for kinds in tasks.values()
    )

    # Then each finished after exactly one attempt, run once, one GPU at a time
    assert [(job.status, job.attempt) for job in done] == [(JobStatus.FINISHED, 1)] * 10
    records = _records(out)
    assert sorted(r["job_id"] for r in records) == sorted(job.id for job in jobs)
    by_gpu: dict[object, list[dict[str, object]]] = {}
    for record in records:
        by_gpu.setdefault(record["cuda_visible_devices"], []).append(record)
    for runs in by_gpu.values():
        runs.sort(key=lambda r: float(r["start"]))  # type: ignore[arg-type]
        for first, second in itertools.pairwise(runs):
            assert float(first["end"]) <= float(second["start"])  # type: ignore[arg-type]


@pytest.mark.timeout(180)
def test_twelve_jobs_on_four_gpus_each_run_once_never_sharing_a_gpu(
    stack: Settings, tmp_path: Path
) -> None:
    # Given 4 GPU workers and 12 one-GPU jobs that record where and when they ran
    out = tmp_path / "runs.jsonl"
    with Client(stack) as client:
        jobs = [
            client.submit(
                JobSpec(
                    name=f"job{i}",
                    command=[sys.executable, RECORD, str(out), "1"],
                    env={"MY_API_TOKEN": "hunter2"},
                )
            )
            for i in range(12)
        ]
        # When they all end
        calls: list[list[Job]] = []
        done = client.wait([job.id for job in jobs], timeout=120, on_change=calls.append)

    # Then every job finished, exactly once
    assert [job.status for job in done] == [JobStatus.FINISHED] * 12
    # The wait was told of every job at first, and after that only of those it read
    # again: a job seen done is not read again
    assert sorted(job.id for job in calls[0]) == sorted(job.id for job in jobs)
    seen_done: set[str] = set()
    for call in calls[1:]:
        assert not seen_done & {job.id for job in call}
        seen_done |= {job.id for job in call if job.done}
    assert seen_done | {job.id for job in calls[0] if job.done} == {job.id for job in jobs}
    records = _records(out)
    assert sorted(r["job_id"] for r in records) == sorted(job.id for job in jobs)
    assert {r["device_order"] for r in records} == {"PCI_BUS_ID"}
    # no two jobs ever held the same GPU at the same moment
    by_gpu: dict[object, list[dict[str, object]]] = {}
    for record in records:
        by_gpu.setdefault(record["cuda_visible_devices"], []).append(record)
    assert set(by_gpu) == {"0", "1", "2", "3"}
    for runs in by_gpu.values():
        runs.sort(key=lambda r: float(r["start"]))  # type: ignore[arg-type]
        for first, second in itertools.pairwise(runs):
            assert float(first["end"]) <= float(second["start"])  # type: ignore[arg-type]
    # and at some moment all four GPUs were busy at once
    starts = sorted(float(r["start"]) for r in records)  # type: ignore[arg-type]
    assert any(
        sum(float(r["start"]) <= t < float(r["end"]) for r in records) == 4  # type: ignore[arg-type]
        for t in starts
    )
    # The job saw its secret; the disk never did
    assert {r["secret"] for r in records} == {"hunter2"}
    by_job = {r["job_id"]: r for r in records}
    for job in done:
        _check_tree(job.job_dir, job.id, by_job[job.id])
        assert "hunter2" not in (job.job_dir / "config.json").read_text()
    # nor anything else persisted: the registry, the embedded Redis's append-only
    # file (the value is sealed there: ugro.live.secret_box), the logs
    holding = [
        path
        for path in stack.data_dir.rglob("*")
        if path.is_file() and not path.is_socket() and b"hunter2" in path.read_bytes()
    ]
    assert not holding, holding
    assert (stack.data_dir / "redis").is_dir() or not stack.embedded_redis
    # Nothing but the jobs' own folders in jobs/: no staging tree is left behind
    assert sorted(p.name for p in stack.jobs_dir.iterdir()) == sorted(j.id for j in done)


def _check_tree(job_dir: Path, job_id: str, record: dict[str, object]) -> None:
    for name in ("config.json", "metadata.json", "metrics.jsonl", "console.log"):
        assert (job_dir / name).is_file(), name
    for name in ("logs", "checkpoints", "tensorboard"):
        assert (job_dir / name).is_dir(), name
    config = json.loads((job_dir / "config.json").read_text())
    assert config["job_id"] == job_id
    assert config["spec"]["env"] == {"MY_API_TOKEN": "***"}
    meta = json.loads((job_dir / "metadata.json").read_text())
    for key in (
        "host",
        "node",
        "gpus",
        "command",
        "start",
        "end",
        "duration_s",
        "attempt",
        "exit_code",
    ):
        assert meta[key] is not None, key
    assert meta["exit_code"] == 0 and meta["attempt"] == 1 and len(meta["gpus"]) == 1
    log = (job_dir / "logs" / "training.log").read_text()
    assert f"recording {job_id}" in log
    assert (job_dir / "logs" / "rank_0.log").read_text() == log
    assert record["job_dir"] == str(job_dir)
    assert record["checkpoint_dir"] == str(job_dir / "checkpoints")
    assert record["tensorboard_dir"] == str(job_dir / "tensorboard")


@pytest.mark.timeout(180)
def test_the_cli_as_a_user_types_it(stack: Settings, tmp_path: Path) -> None:
    examples = ROOT / "examples"
    # submit prints the id alone
    result = ugro(
        stack,
        "submit",
        "--name",
        "lr-3e-1",
        "--gpus",
        "1",
        "--",
        "python",
        "train.py",
        "--lr",
        "0.3",
        "--epochs",
        "3",
        cwd=examples,
    )
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    assert job_id.startswith("lr-3e-1-") and "\n" not in job_id

    # logs -f follows the training log until the job ends
    logs = ugro(stack, "logs", job_id, "-f")
    assert logs.returncode == 0, logs.stderr
    assert "epoch 2/3" in logs.stdout and "best val_accuracy" in logs.stdout

    # wait exits 0 when all succeeded
    assert ugro(stack, "wait", job_id).returncode == 0

    # status and list speak JSON for scripts
    status = json.loads(ugro(stack, "status", job_id, "--json").stdout)
    for key in ("id", "name", "status", "gpus", "node", "job_dir", "exit_code"):
        assert key in status
    assert status["status"] == "finished" and status["exit_code"] == 0
    assert status["node"] == "testnode"
    job_dir = Path(status["job_dir"])
    assert sorted(p.name for p in job_dir.glob("epoch_*")) == ["epoch_0", "epoch_1", "epoch_2"]
    metrics = [json.loads(line) for line in (job_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [0, 1, 2]
    listed = json.loads(ugro(stack, "list", "--json").stdout)
    assert [job["id"] for job in listed] == [job_id]
    table = ugro(stack, "list")
    assert job_id in table.stdout and "finished" in table.stdout

    # a failing job: wait exits with its code
    failing = ugro(
        stack,
        "submit",
        "--name",
        "fails",
        "--",
        sys.executable,
        RECORD,
        str(tmp_path / "f.jsonl"),
        "0",
        "3",
    ).stdout.strip()
    assert ugro(stack, "wait", failing, job_id).returncode == 3


@pytest.mark.timeout(120)
def test_a_command_that_does_not_exist_fails_the_job_not_the_worker(
    stack: Settings, tmp_path: Path
) -> None:
    gone = tmp_path / "workdir"  # as if removed after the submit (the CLI refuses it)
    with Client(stack) as client:
        bad = client.submit(JobSpec(name="nope", command=["/no/such/program", "--x"]))
        typo = client.submit(JobSpec(name="typo", command=["pythn", "train.py"]))
        moved = client.submit(JobSpec(name="moved", command=["true"], working_dir=str(gone)))
        [bad, typo, moved] = client.wait([bad.id, typo.id, moved.id], timeout=60)
        assert bad.status is JobStatus.FAILED
        assert "/no/such/program" in (bad.job_dir / "console.log").read_text()
        assert bad.error and "cannot start" in bad.error
        assert typo.error == "cannot start 'pythn': no such program on the job's PATH"
        assert moved.error and f"working directory {gone} does not exist" in moved.error
        # the reason is the attempt's log, under the names that always exist
        for job in (bad, typo, moved):
            assert job.error is not None
            assert job.error in (job.job_dir / "logs" / "training.log").read_text()
            logs = ugro(stack, "logs", job.id)
            assert logs.returncode == 0 and job.error in logs.stdout
        # the same worker goes on running jobs: fill every GPU once more
        out = tmp_path / "after.jsonl"
        jobs = [
            client.submit(
                JobSpec(name=f"after{i}", command=[sys.executable, RECORD, str(out), "0.2"])
            )
            for i in range(4)
        ]
        assert all(job.succeeded for job in client.wait([job.id for job in jobs], timeout=60))


@pytest.mark.timeout(180)
def test_after_down_jobs_are_still_read_and_a_bare_python_is_ugro_s(
    settings: Settings, tmp_path: Path
) -> None:
    # given a stack started from a shell that did not activate ugro's virtualenv
    env = env_for(settings)
    env["PATH"] = os.pathsep.join(["/usr/bin", "/bin"])
    up = ugro(settings, "up", env=env)
    assert up.returncode == 0, up.stderr
    try:
        # when a job's bare `python` imports ugro (its options need no `--`)
        code = "import sys, ugro; print('ugro from', sys.prefix)"
        submitted = ugro(settings, "submit", "--name", "venv", "python", "-c", code, env=env)
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip()
        waited = ugro(settings, "wait", job_id, env=env)
        assert waited.returncode == 0, waited.stderr + ugro(settings, "logs", job_id).stdout
    finally:
        down = ugro(settings, "down", env=env)
        left = processes_of(settings)
        for proc in left:
            proc.kill()
    assert down.returncode == 0 and not left, down.stderr
    # then, with the stack down, what is on disk can still be read
    listed = ugro(settings, "list")
    assert listed.returncode == 0, listed.stderr
    assert job_id in listed.stdout and "finished" in listed.stdout
    shown = ugro(settings, "status", job_id)
    assert shown.returncode == 0, shown.stderr
    assert "finished" in shown.stdout and "ok, exit code 0" in shown.stdout
    logs = ugro(settings, "logs", job_id)
    assert logs.returncode == 0 and f"ugro from {sys.prefix}" in logs.stdout
    # and what needs the live state says how to start it
    nodes = ugro(settings, "nodes")
    assert nodes.returncode == 3 and "ugro up" in nodes.stderr


def test_settings_are_what_is_given_then_the_environment_then_the_defaults(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a shell with settings for ugro, one spelled in lower case
    for name, value in env_for(settings).items():
        if name.startswith("UGRO_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("ugro_node_name", "fromshell")
    monkeypatch.setenv("UGRO_STUCK_AFTER", "90")
    monkeypatch.delenv("UGRO_OUTDATED_AFTER", raising=False)
    # When a client is made without settings, it reads them from the environment
    with Client(connect=False) as client:
        read = client.settings
        assert client.list() == []  # the registry of those settings: no job yet
    assert (read.data_dir, read.node_name, read.stuck_after) == (
        settings.data_dir,
        "fromshell",
        90.0,
    )
    assert read.outdated_after == 30 * 86400.0  # the default
    # and what is given takes the place of what the environment says
    given = Settings(node_name="given", stuck_after=5)
    assert (given.node_name, given.stuck_after, given.data_dir) == ("given", 5.0, settings.data_dir)


@pytest.mark.timeout(60)
def test_a_drawn_id_that_is_taken_is_drawn_again(
    settings: Settings, live_redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Client(settings) as client:
        # Given the random bits of a job's id come up twice in a row
        first = client.submit(JobSpec(name="same", command=["true"]))
        drawn = iter([first.id, first.id, "same-0badf00d"])
        monkeypatch.setattr("ugro.scheduling.submit.new_job_id", lambda _: next(drawn))
        # When another job of that name is submitted, it gets the next draw
        second = client.submit(JobSpec(name="same", command=["true"]))
        assert second.id == "same-0badf00d"
        assert [job.status for job in client.get_many([first.id, second.id])] == [
            JobStatus.QUEUED,
            JobStatus.QUEUED,
        ]
