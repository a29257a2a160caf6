"""Scheduling and run control on one shared stack of 4 simulated GPUs: multi-GPU
jobs, priorities, no starvation, cancel, timeouts, exit classes and retries."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import (
    ROOT,
    make_settings,
    processes_of,
    registry_database,
    running_stack,
    ugro,
    wait_until,
)
from ugro import Client, JobSpec, JobStatus
from ugro.settings import Settings
from ugro.transport.queues import queue_for_gpu

JOBS = ROOT / "tests" / "jobs"
RECORD = str(JOBS / "record.py")
PY = sys.executable


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """One stack for the module; a short visibility timeout so that a redelivery, if
    ugro let one happen, would happen within the tests."""
    root = tmp_path_factory.mktemp("runctl")
    with registry_database(root) as url:
        settings = make_settings(root / "data", url, visibility_timeout=2.0)
        with running_stack(settings) as running:
            yield running


def records(path: Path) -> dict[str, dict[str, object]]:
    return {r["job_id"]: r for r in map(json.loads, path.read_text().splitlines())}


def rec(out: Path, seconds: float, name: str, **spec: object) -> JobSpec:
    return JobSpec(name=name, command=[PY, RECORD, str(out), str(seconds)], **spec)  # type: ignore[arg-type]


def span(record: dict[str, object]) -> tuple[float, float]:
    return float(record["start"]), float(record["end"])  # type: ignore[arg-type]


@pytest.mark.timeout(60)
def test_a_multi_gpu_job_runs_once_on_exactly_its_gpus(client: Client, tmp_path: Path) -> None:
    out = tmp_path / "runs.jsonl"
    big = client.submit(rec(out, 1.5, "big", gpus=3))
    small = [client.submit(rec(out, 0.2, f"small{i}")) for i in range(4)]
    done = client.wait([big.id] + [s.id for s in small], timeout=50)
    assert all(job.succeeded for job in done)
    runs = records(out)
    big_done = done[0]
    visible = [int(i) for i in str(runs[big.id]["cuda_visible_devices"]).split(",")]
    assert sorted(visible) == sorted(big_done.gpu_indices) and len(set(visible)) == 3
    start, end = span(runs[big.id])
    for job in done[1:]:
        gpu = int(str(runs[job.id]["cuda_visible_devices"]))
        s, e = span(runs[job.id])
        if gpu in visible:  # its GPU was leased to the big job: it ran before or after
            assert e <= start or s >= end


@pytest.mark.timeout(60)
def test_a_job_that_fits_at_once_is_placed_as_it_is_submitted_and_others_queue(
    client: Client, tmp_path: Path
) -> None:
    out = tmp_path / "runs.jsonl"
    live_redis, keys = client.rt.live.redis, client.rt.live.keys

    def queued_so_far() -> int:  # the queue's counter: one per job that went through it
        return int(live_redis.get(keys.sequence) or 0)

    # Given idle GPUs, a job that fits comes back from submit already placed, never
    # queued, with what placement's backfill reads of it in the live state.
    before = queued_so_far()
    first = client.submit(rec(out, 1.5, "at-once", gpus=3, timeout=60))
    assert first.status in (JobStatus.PLACED, JobStatus.RUNNING), first.status
    assert queued_so_far() == before
    live = client.rt.live.job(first.id)
    assert (live["gpus"], live["timeout"], live["priority"]) == ("3", "60.0", "0")
    assert client.rt.live.queue_position(first.id) == (None, None)
    # While a job waits, the next one queues behind it, though a GPU is free.
    waiting = client.submit(rec(out, 0.1, "waits", gpus=4))
    behind = client.submit(rec(out, 0.1, "behind", gpus=1))
    assert (waiting.status, behind.status) == (JobStatus.QUEUED, JobStatus.QUEUED)
    assert queued_so_far() == before + 2
    done = client.wait([first.id, waiting.id, behind.id], timeout=50)
    assert all(job.succeeded for job in done)
    assert done[0].gpu_indices == sorted(done[0].gpu_indices) and len(done[0].gpu_indices) == 3
    runs = records(out)
    assert span(runs[waiting.id])[0] >= span(runs[first.id])[1]


@pytest.mark.timeout(60)
def test_higher_priority_starts_first_and_equal_ones_in_submission_order(
    client: Client, tmp_path: Path
) -> None:
    out = tmp_path / "runs.jsonl"
    blocker = client.submit(rec(out, 1.5, "blocker", gpus=4))
    low_a = client.submit(rec(out, 0.1, "low-a", gpus=4))
    low_b = client.submit(rec(out, 0.1, "low-b", gpus=4))
    high = client.submit(rec(out, 0.1, "high", gpus=4, priority=5))
    client.wait([blocker.id, low_a.id, low_b.id, high.id], timeout=50)
    runs = records(out)
    order = sorted([high, low_a, low_b], key=lambda job: span(runs[job.id])[0])
    assert [job.name for job in order] == ["high", "low-a", "low-b"]


@pytest.mark.timeout(60)
def test_a_big_job_is_not_starved_by_a_stream_of_small_ones(client: Client, tmp_path: Path) -> None:
    out = tmp_path / "runs.jsonl"
    first = [client.submit(rec(out, 1.0, f"first{i}")) for i in range(4)]
    big = client.submit(rec(out, 0.3, "big", gpus=4))
    later = [client.submit(rec(out, 0.3, f"later{i}")) for i in range(6)]
    client.wait([j.id for j in [*first, big, *later]], timeout=50)
    runs = records(out)
    big_start, big_end = span(runs[big.id])
    assert big_start >= max(span(runs[j.id])[1] for j in first)
    assert all(span(runs[j.id])[0] >= big_end for j in later)


def test_jobs_that_can_never_fit_are_refused_at_submit(lab: Settings) -> None:
    too_big = ugro(lab, "submit", "--name", "huge", "--gpus", "5", "--", "true")
    assert too_big.returncode == 2 and "gpus: 5 GPUs asked" in too_big.stderr
    nowhere = ugro(lab, "submit", "--name", "lost", "--node", "nosuch", "--", "true")
    assert nowhere.returncode == 2 and "node: no node named 'nosuch'" in nowhere.stderr


@pytest.mark.timeout(60)
def test_a_cancelled_queued_job_never_starts(client: Client, tmp_path: Path) -> None:
    out = tmp_path / "runs.jsonl"
    blocker = client.submit(rec(out, 1.0, "blocker", gpus=4))
    queued = client.submit(rec(out, 0.1, "queued"))
    cancelled = client.cancel(queued.id)
    assert cancelled.status is JobStatus.CANCELLED
    client.wait(blocker.id, timeout=30)
    assert queued.id not in records(out)
    assert client.get(queued.id).attempt == 0
    assert ugro(client.settings, "cancel", blocker.id).returncode == 2  # already finished


def _zombies_of(settings: Settings) -> list[int]:
    """Zombie children of the stack's processes (its supervisor and workers)."""
    parents = {proc.pid for proc in processes_of(settings)}
    found = []
    for proc in psutil.process_iter(["status", "ppid"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE and proc.info["ppid"] in parents:
            found.append(proc.pid)
    return found


@pytest.mark.timeout(90)
def test_cancel_stops_the_whole_job_even_a_stubborn_setsid_grandchild(
    client: Client, tmp_path: Path
) -> None:
    pids_file = tmp_path / "pids"
    job = client.submit(
        JobSpec(name="stubborn", command=[str(JOBS / "stubborn.sh"), str(pids_file)])
    )
    wait_until(lambda: pids_file.exists() and len(pids_file.read_text().split()) == 2, 30)
    pids = [int(p) for p in pids_file.read_text().split()]
    assert all(psutil.pid_exists(pid) for pid in pids)
    assert os.getsid(pids[0]) != os.getsid(pids[1])  # the grandchild left the session
    result = ugro(client.settings, "cancel", job.id, "--grace", "1s")
    assert result.returncode == 0, result.stderr
    done = client.get(job.id)
    assert done.status is JobStatus.CANCELLED and done.exit_reason == "cancelled"
    assert not any(_alive(pid) for pid in pids)
    # its GPU is free again (the lease goes before the status changes)
    holders = client.rt.live.leases.lease_holders("testnode", done.gpu_indices)
    assert all(holder is None for holder in holders.values())
    assert _zombies_of(client.settings) == []
    assert "cancelled" in (done.job_dir / "console.log").read_text()


@pytest.mark.timeout(60)
def test_cancel_sends_each_process_one_sigterm_then_one_sigkill(
    client: Client, tmp_path: Path
) -> None:
    # given a job and its child that both handle SIGTERM (a checkpoint, say) and go on
    terms = tmp_path / "terms"
    ready = tmp_path / "terms.ready"
    job = client.submit(
        JobSpec(name="terms", command=[PY, str(JOBS / "count_terms.py"), str(terms)])
    )
    wait_until(lambda: ready.exists() and len(ready.read_text().split()) == 2, 30, "both handlers")
    # when it is cancelled with a grace
    result = ugro(client.settings, "cancel", job.id, "--grace", "2s")
    # then each process saw one SIGTERM, and SIGKILL ended them after the grace
    assert result.returncode == 0, result.stderr
    assert client.get(job.id).status is JobStatus.CANCELLED
    pids = ready.read_text().split()
    assert sorted(terms.read_text().split()) == sorted(pids)
    assert not any(_alive(int(pid)) for pid in pids)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.timeout(60)
def test_a_timeout_stops_the_job_and_fails_it(client: Client) -> None:
    job = client.submit(JobSpec(name="slow", command=["sleep", "60"], timeout="1s"))
    [done] = client.wait(job.id, timeout=40)
    assert done.status is JobStatus.FAILED and done.exit_reason == "timeout"
    assert done.duration is not None and done.duration < 10
    meta = json.loads((done.job_dir / "metadata.json").read_text())
    assert meta["exit_reason"] == "timeout"


@pytest.mark.timeout(90)
def test_exits_are_classified_and_an_oom_is_retried_only_when_asked(client: Client) -> None:
    oom = [
        PY,
        "-c",
        "import sys; print('RuntimeError: CUDA out of memory. Tried to allocate"
        " 2.00 GiB'); sys.exit(1)",
    ]
    progress_then_exit = 'echo "epoch 3/5 loss=0.4 val_acc=0.8"; exit 5'
    raises = [PY, "-c", "print('epoch 1 loss=0.3'); raise ValueError('bad lr')"]
    jobs = {
        "error": client.submit(JobSpec(name="exit3", command=["sh", "-c", "exit 3"])),
        "progress": client.submit(JobSpec(name="exit5", command=["sh", "-c", progress_then_exit])),
        "raises": client.submit(JobSpec(name="raises", command=raises)),
        "killed": client.submit(JobSpec(name="kill9", command=["sh", "-c", "kill -9 $$"])),
        "oom": client.submit(JobSpec(name="oom", command=oom, max_retries=2)),
        "oom-retried": client.submit(
            JobSpec(name="oom-retry", command=oom, max_retries=1, retry_on=["oom"])
        ),
    }
    done = dict(zip(jobs, client.wait([j.id for j in jobs.values()], timeout=60), strict=True))
    assert done["error"].exit_reason == "error" and done["error"].exit_code == 3
    # the reason is a line that reads as an error, never the job's last progress line
    assert done["error"].error == "exit code 3"
    assert done["progress"].error == "exit code 5"
    assert done["raises"].error == "ValueError: bad lr"
    wait = ugro(client.settings, "wait", done["progress"].id)
    assert wait.returncode == 5 and "(error: exit code 5)" in wait.stderr
    assert done["killed"].exit_reason == "killed" and done["killed"].exit_signal == 9
    assert done["oom"].exit_reason == "oom" and done["oom"].attempt == 1
    assert done["oom-retried"].exit_reason == "oom" and done["oom-retried"].attempt == 2
    assert all(job.status is JobStatus.FAILED for job in done.values())
    assert ugro(client.settings, "wait", done["error"].id).returncode == 3
    for job in done.values():
        meta = json.loads((job.job_dir / "metadata.json").read_text())
        assert meta["exit_reason"] == job.exit_reason


@pytest.mark.timeout(60)
def test_a_retry_runs_as_the_next_attempt_resuming_from_the_last_checkpoint(
    client: Client, tmp_path: Path
) -> None:
    out = tmp_path / "attempts.jsonl"
    job = client.submit(
        JobSpec(name="flaky", command=[PY, str(JOBS / "flaky.py"), str(out)], max_retries=1)
    )
    [done] = client.wait(job.id, timeout=40)
    assert done.status is JobStatus.FINISHED and done.attempt == 2
    first, second = map(json.loads, out.read_text().splitlines())
    assert first["resume_from"] is None
    assert second["resume_from"] == str(done.job_dir / "checkpoints" / "ckpt_1.pt")
    logs = done.job_dir / "logs"
    assert "attempt 1 failing" in (logs / "attempt_1" / "training.log").read_text()
    assert "resuming from" in (logs / "attempt_2" / "training.log").read_text()
    assert (logs / "training.log").read_text() == (logs / "attempt_2" / "rank_0.log").read_text()
    by_hand = ugro(client.settings, "logs", job.id, "--attempt", "1")
    assert by_hand.returncode == 0 and "attempt 1 failing" in by_hand.stdout
    assert [e.kind for e in client.rt.registry.events(job.id)].count("requeued") == 1


@pytest.mark.timeout(60)
def test_retry_by_hand_runs_a_failed_job_again(client: Client) -> None:
    job = client.submit(JobSpec(name="fails", command=["sh", "-c", "exit 1"]))
    [failed] = client.wait(job.id, timeout=30)
    assert failed.status is JobStatus.FAILED and failed.attempt == 1
    result = ugro(client.settings, "retry", job.id)
    assert result.returncode == 0, result.stderr
    [again] = client.wait(job.id, timeout=30)
    assert again.status is JobStatus.FAILED and again.attempt == 2
    assert ugro(client.settings, "retry", "nosuchjob").returncode == 2


@pytest.mark.timeout(60)
def test_a_job_longer_than_the_visibility_timeout_runs_once(client: Client, tmp_path: Path) -> None:
    out = tmp_path / "runs.jsonl"
    job = client.submit(rec(out, 6.0, "long"))  # three visibility timeouts
    [done] = client.wait(job.id, timeout=50)
    assert done.succeeded and done.attempt == 1
    assert len(out.read_text().splitlines()) == 1


class _Exploit:
    """Unpickling this runs a command: what a pickle-accepting worker would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, ...]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.timeout(60)
def test_a_pickled_message_is_refused_and_the_worker_stays_up(
    client: Client, lab: Settings, tmp_path: Path
) -> None:
    marker = tmp_path / "exploited"
    client.rt.app.send_task(
        "ugro.run_job",
        kwargs={"job_id": _Exploit(marker), "token": "x", "node": "testnode", "gpus": [0]},
        queue=queue_for_gpu(lab, "testnode", 0),
        serializer="pickle",
    )
    log = lab.run_dir / "gpu-0.log"
    wait_until(lambda: "pickle" in log.read_text(), 20)
    assert "untrusted content of type pickle" in log.read_text()
    assert not marker.exists()
    # the worker is still up and runs the next jobs on its GPU
    out = tmp_path / "runs.jsonl"
    after = [client.submit(rec(out, 0.1, f"after{i}")) for i in range(4)]
    assert all(j.succeeded for j in client.wait([j.id for j in after], timeout=30))
    assert "0" in {str(r["cuda_visible_devices"]) for r in records(out).values()}


@pytest.mark.timeout(60)
def test_a_message_that_is_not_ugro_s_json_is_dropped_with_a_line_and_never_run(
    client: Client, lab: Settings, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    queue_key = client.rt.job_message("x", "t", "testnode", [0]).key
    envelope = json.loads(client.rt.job_message("x", "t", "testnode", [0]).payload)
    foreign = envelope | {
        "headers": envelope["headers"] | {"task": "os.system", "argsrepr": "", "kwargsrepr": ""},
        "body": base64.b64encode(json.dumps([[f"touch {marker}"], {}, {}]).encode()).decode(),
    }
    # bytes that are not JSON, JSON that is no message, a message of a task that is
    # not ugro's, and ugro's task with arguments of the wrong kinds
    wrong_args = envelope | {
        "body": base64.b64encode(
            json.dumps([[], {"job_id": {"$": 1}, "token": 7, "node": [], "gpus": "x"}, {}]).encode()
        ).decode()
    }
    hostile = [
        b"\x80\x04not json",
        b'{"hello": "world"}',
        json.dumps(foreign),
        json.dumps(wrong_args),
    ]
    client.rt.live.redis.lpush(queue_key, *hostile)
    log = lab.run_dir / "gpu-0.log"
    lines = (
        "not a message of ugro's: not JSON",
        "not a message of ugro's: JSON without a message's envelope",
        "unregistered task of type 'os.system'",
        "dropped a job message with arguments of the wrong kinds",
    )
    wait_until(
        lambda: all(line in log.read_text() for line in lines),
        20,
        "a line for each",
        lambda: log.read_text()[-3000:],
    )
    assert not marker.exists()
    assert "Unrecoverable error" not in log.read_text()
    out = tmp_path / "runs.jsonl"
    after = [client.submit(rec(out, 0.1, f"after{i}")) for i in range(4)]
    assert all(j.succeeded for j in client.wait([j.id for j in after], timeout=30))
    assert "0" in {str(r["cuda_visible_devices"]) for r in records(out).values()}


@pytest.mark.timeout(120)
def test_200_concurrent_submissions_from_8_processes(
    client: Client, lab: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "ran"
    script = (
        "import sys\n"
        "from ugro import Client, JobSpec\n"
        "with Client() as c:\n"
        "    for i in range(25):\n"
        f"        j = c.submit(JobSpec(name=f'burst{{sys.argv[1]}}-{{i}}', shell=True,"
        f" command=['echo $UGRO_JOB_ID >> {out}']))\n"
        "        print(j.id)\n"
    )
    from tests.conftest import env_for

    procs = [
        subprocess.Popen(
            [PY, "-c", script, str(n)], env=env_for(lab), stdout=subprocess.PIPE, text=True
        )
        for n in range(8)
    ]
    ids = [line for proc in procs for line in proc.communicate(timeout=100)[0].split()]
    assert all(proc.returncode == 0 for proc in procs)
    assert len(ids) == 200 and len(set(ids)) == 200
    done = client.wait(ids, timeout=100)
    assert all(job.succeeded and job.attempt == 1 for job in done)
    ran = out.read_text().split()
    assert sorted(ran) == sorted(ids)


@pytest.mark.timeout(60)
def test_a_gpu_another_program_uses_gets_no_job_and_says_why(
    client: Client, lab: Settings, tmp_path: Path
) -> None:
    intruder = subprocess.Popen(["sleep", "300"])
    control = lab.data_dir / "fake-gpus.json"
    try:
        control.write_text(json.dumps({str(i): {"processes": [intruder.pid]} for i in range(4)}))
        wait_until(
            lambda: all(g["state"] == "blocked" for n in client.nodes() for g in n["gpus"]), 20
        )
        job = client.submit(JobSpec(name="polite", command=["true"]))
        status = json.loads(ugro(lab, "status", job.id, "--json").stdout)
        assert status["status"] == "queued"
        assert f"in use by another program (pid {intruder.pid}, sleep)" in status["waiting"]
        shown = ugro(lab, "status", job.id).stdout  # the human view says why, too
        assert "waiting" in shown and f"pid {intruder.pid}" in shown
        nodes = ugro(lab, "nodes", "--gpus")
        assert "blocked" in nodes.stdout and str(intruder.pid) in nodes.stdout
    finally:
        intruder.kill()
        intruder.wait()
    [done] = client.wait(job.id, timeout=30)  # the GPU is free again: it runs
    assert done.succeeded
    control.unlink()


def test_the_stack_leaves_nothing_behind(lab: Settings) -> None:
    # (the module's fixture checks this again after `ugro down`)
    assert processes_of(lab)
