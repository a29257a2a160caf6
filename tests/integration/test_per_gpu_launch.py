"""The per-GPU launcher on real processes: one rank per GPU with its own variables
and log, all in the launcher's process group; the first failure, a stop signal and
ranks that ignore SIGTERM bring every rank down; bad usage exits 2."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT, wait_until

RANK_ENV = str(ROOT / "tests" / "jobs" / "rank_env.py")
PY = sys.executable
# A rank that ignores SIGTERM, as a training loop stuck in a collective may.
STUBBORN = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(30)\n"
)


@pytest.fixture
def job_id() -> Iterator[str]:
    """A tag of the test's own for its processes; whatever carries it afterwards
    is killed, so a failing test leaves no process behind."""
    tag = f"per-gpu-test-{secrets.token_hex(4)}"
    yield tag
    for proc in tagged(tag):
        with contextlib.suppress(psutil.Error):
            proc.kill()


def tagged(job_id: str) -> list[psutil.Process]:
    """Running processes whose environment carries ``job_id``."""
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if (
                proc.status() != psutil.STATUS_ZOMBIE
                and proc.environ().get("UGRO_JOB_ID") == job_id
            ):
                found.append(proc)
    return found


def launch(
    tmp_path: Path, job_id: str, gpus: str, command: list[str], **env: str
) -> subprocess.Popen[str]:
    """The launcher in a session of its own (so its pgid is its pid), as ugro runs it."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("UGRO_") and key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    }
    environment.update(
        CUDA_VISIBLE_DEVICES=gpus,
        UGRO_JOB_ID=job_id,
        PYTHONPATH=str(ROOT),
        **env,
    )
    template = str(tmp_path / "logs" / "rank_{rank}.log")
    return subprocess.Popen(
        [PY, "-m", "ugro.execution.per_gpu", "--logs", template, "--", *command],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def rank_log(tmp_path: Path, rank: int) -> str:
    path = tmp_path / "logs" / f"rank_{rank}.log"
    return path.read_text() if path.exists() else ""


@pytest.mark.timeout(60)
def test_each_gpu_gets_one_rank_in_the_launchers_group(tmp_path: Path, job_id: str) -> None:
    # Given node 1 of 2 with four GPUs
    out = tmp_path / "out"
    launcher = launch(
        tmp_path,
        job_id,
        "0,1,2,3",
        [PY, RANK_ENV, str(out)],
        UGRO_NODE_RANK="1",
        UGRO_NUM_NODES="2",
        UGRO_GPUS_PER_NODE="4",
        WORLD_SIZE="8",
    )
    # When its ranks run to their end
    stdout, stderr = launcher.communicate(timeout=30)

    # Then all four succeeded, as ranks 4-7, one GPU each, in the launcher's group
    assert launcher.returncode == 0, (stdout, stderr)
    assert "started ranks 4-7 on GPUs 0,1,2,3:" in stdout
    for local_rank in range(4):
        rank = 4 + local_rank
        record = json.loads((out / f"rank_{rank}.json").read_text())
        assert record["RANK"] == str(rank)
        assert record["LOCAL_RANK"] == str(local_rank)
        assert record["LOCAL_WORLD_SIZE"] == "4"
        assert record["WORLD_SIZE"] == "8"
        assert record["CUDA_VISIBLE_DEVICES"] == str(local_rank)
        assert record["UGRO_GPUS"] == "0,1,2,3"
        assert record["UGRO_NODE_RANK"] == "1"
        assert record["UGRO_JOB_ID"] == job_id
        assert record["pgid"] == launcher.pid
        assert f"rank {rank} done" in rank_log(tmp_path, rank)


@pytest.mark.timeout(60)
def test_the_first_failing_rank_stops_the_others(tmp_path: Path, job_id: str) -> None:
    # Given three ranks, of which rank 1 fails at once while the others would run 30 s
    began = time.monotonic()
    launcher = launch(
        tmp_path,
        job_id,
        "0,1,2",
        [PY, RANK_ENV, str(tmp_path / "out"), "1", "30"],
        UGRO_STOP_GRACE="5",
    )
    stdout, stderr = launcher.communicate(timeout=30)

    # Then the launcher ends with rank 1's code, naming it and its error, long before
    # the others' 30 s, and leaves no rank running
    assert launcher.returncode == 3, (stdout, stderr)
    assert time.monotonic() - began < 15
    assert "rank 1 (GPU 1) exited with code 3: ValueError: rank 1 failed on purpose" in stdout
    assert "out of memory" not in stdout
    assert tagged(job_id) == []


@pytest.mark.timeout(60)
def test_a_stopped_launcher_stops_its_ranks(tmp_path: Path, job_id: str) -> None:
    # Given two ranks that would run 30 s
    out = tmp_path / "out"
    launcher = launch(
        tmp_path, job_id, "0,1", [PY, RANK_ENV, str(out), "none", "30"], UGRO_STOP_GRACE="5"
    )
    wait_until(lambda: len(list(out.glob("rank_*.json"))) == 2, 20, "both ranks to start")

    # When the launcher alone (not its group) gets SIGTERM
    began = time.monotonic()
    launcher.send_signal(signal.SIGTERM)
    stdout, stderr = launcher.communicate(timeout=30)

    # Then it passes it on, ends within the grace with 128+15 and leaves no rank
    assert launcher.returncode == 128 + signal.SIGTERM, (stdout, stderr)
    assert time.monotonic() - began < 5
    assert "stopped by SIGTERM" in stdout
    assert tagged(job_id) == []


@pytest.mark.timeout(60)
def test_ranks_that_ignore_sigterm_are_killed_after_the_grace(tmp_path: Path, job_id: str) -> None:
    # Given two ranks that ignore SIGTERM
    launcher = launch(tmp_path, job_id, "0,1", [PY, "-c", STUBBORN], UGRO_STOP_GRACE="1")
    wait_until(
        lambda: all("ready" in rank_log(tmp_path, rank) for rank in (0, 1)),
        20,
        "both ranks to start",
    )

    # When the launcher is stopped
    began = time.monotonic()
    launcher.send_signal(signal.SIGINT)
    stdout, stderr = launcher.communicate(timeout=30)

    # Then it kills them once the grace is over
    waited = time.monotonic() - began
    assert launcher.returncode == 128 + signal.SIGINT, (stdout, stderr)
    assert 1 <= waited < 10, waited
    assert "killed ranks 0, 1" in stdout
    assert tagged(job_id) == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--logs", "/tmp/x/rank.log", "--", PY, "-c", "pass"], "'/tmp/x/rank.log'"),
        (["--logs", "/tmp/x/rank_{rank}.log", PY, "-c", "pass"], "no '--'"),
        (["--logs", "/tmp/x/rank_{rank}.log", "--"], "no command"),
    ],
)
def test_bad_usage_exits_2_naming_the_problem(args: list[str], complaint: str) -> None:
    run = subprocess.run(
        [PY, "-m", "ugro.execution.per_gpu", *args],
        cwd=ROOT,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "0", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2
    assert complaint in run.stderr
    assert run.stdout == ""


@pytest.mark.timeout(60)
def test_no_gpus_exits_2(tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    run = subprocess.run(
        [PY, "-m", "ugro.execution.per_gpu", "--logs", str(tmp_path / "{rank}.log"), "--", PY],
        cwd=ROOT,
        env={**environment, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2
    assert "CUDA_VISIBLE_DEVICES" in run.stderr


@pytest.mark.timeout(60)
def test_an_out_of_memory_rank_is_named_for_ugros_classifier(tmp_path: Path, job_id: str) -> None:
    oom = "print('torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB'); exit(1)"
    launcher = launch(tmp_path, job_id, "3", [PY, "-c", oom])
    stdout, stderr = launcher.communicate(timeout=30)

    assert launcher.returncode == 1, (stdout, stderr)
    assert "rank 0 (GPU 3) exited with code 1: torch.OutOfMemoryError" in stdout
    assert stdout.rstrip().endswith("rank 0: CUDA out of memory")


@pytest.mark.timeout(60)
def test_a_command_that_cannot_start_exits_127(tmp_path: Path, job_id: str) -> None:
    launcher = launch(tmp_path, job_id, "0,1", [str(tmp_path / "no-such-program")])
    stdout, stderr = launcher.communicate(timeout=30)

    assert launcher.returncode == 127, (stdout, stderr)
    assert "rank 0 (GPU 0) could not start" in stdout
    assert "no-such-program" in stdout
