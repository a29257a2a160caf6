"""`ugro demo`: a private stack on simulated GPUs, a small sweep with an evaluation
of its best point, a result table, and a job across two nodes with its results tree."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.live import Live
from rich.table import Table

from ugro.cli.base import err, out
from ugro.client import Client
from ugro.errors import StackError
from ugro.job import Job
from ugro.jobs.spec import JobSpec
from ugro.jobs.sweep import SweepSpec, format_value, sweep_from_grid
from ugro.ops.stack import Stack
from ugro.progress.trackers import tracker_for_kind
from ugro.settings import Settings

if TYPE_CHECKING:
    from ugro.arrays import JobArray

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: The sweep: one point a learning rate, each trained for EPOCHS epochs.
SWEEP_NAME = "lr-sweep"
LEARNING_RATES = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]
EPOCHS = 8
#: The job that evaluates the sweep's best point once every point has finished.
EVAL_NAME = "eval-best"
#: The job across nodes: two nodes of (at most) two GPUs each, one process a GPU.
GANG_NODES = 2
GANG_GPUS = 2
#: Seconds for the second node's GPU workers to come up, and for the job to end.
NODE_START_TIMEOUT = 60.0
GANG_TIMEOUT = 60.0


def lr_sweep(python: str) -> SweepSpec:
    """The sweep: one trainer a learning rate, then, once every one has finished,
    an evaluation of the best one's newest checkpoint (``evaluate.py --sweep``)."""
    train = str(EXAMPLES / "train.py")
    evaluate = str(EXAMPLES / "evaluate.py")
    return sweep_from_grid(
        SWEEP_NAME,
        [python, train, "--lr", "{lr}", "--epochs", str(EPOCHS), "--epoch-seconds", "0.4"],
        {"lr": LEARNING_RATES},
        kind="train",
        epochs=EPOCHS,
        tags=["demo"],
        then={
            "name": EVAL_NAME,
            "kind": "eval",
            "tags": ["demo"],
            "command": [python, evaluate, "--sweep", "{sweep}"],
        },
    )


def allreduce(python: str, gpus: int) -> JobSpec:
    """A job across the demo's two nodes: ``gpus`` on each, its ranks summed."""
    return JobSpec(
        name=f"allreduce-{GANG_NODES}x{gpus}",
        nodes=GANG_NODES,
        gpus=gpus,
        launch="gpu",
        tags=["demo"],
        command=[python, str(EXAMPLES / "allreduce.py")],
    )


def read_progress(job: Job) -> tuple[int | None, float | None]:
    """(epochs completed, best score) of a demo job, read by its runner type's tracker."""
    info = tracker_for_kind(job.kind).read(job.job_dir, EPOCHS if job.kind == "train" else None)
    return info.completed_epochs, info.best_score


def _label(job: Job) -> str:
    """A job's name; a sweep point's with its index and parameters: ``lr-sweep[2] lr=0.1``."""
    if job.array_id is None:
        return job.name
    params = " ".join(f"{name}={format_value(value)}" for name, value in job.params.items())
    return f"{job.name}[{job.array_index}] {params}".rstrip()


def _ranked(jobs: list[Job]) -> list[Job]:
    """The jobs with the sweep's points best score first (then those without one, in
    index order), as `ugro sweep status` lists them, ahead of the others."""

    def rank(job: Job) -> tuple[int, float, int]:
        best = read_progress(job)[1]
        return (
            (0, -best, job.array_index or 0) if best is not None else (1, 0.0, job.array_index or 0)
        )

    points = [job for job in jobs if job.array_id is not None]
    return sorted(points, key=rank) + [job for job in jobs if job.array_id is None]


def _table(jobs: list[Job], final: bool) -> Table:
    title = "ugro demo: results" if final else "ugro demo: running"
    table = Table(title=title, header_style="bold")
    for column in ("name", "status", "node/GPU", "progress", "best score", "duration"):
        table.add_column(column)
    for job in _ranked(jobs) if final else jobs:
        epochs, best = read_progress(job)
        if job.kind == "train":
            progress = f"{epochs or 0}/{EPOCHS} epochs"
        else:
            progress = "done" if best is not None else "-"
        where = f"{job.node}/{','.join(map(str, job.gpu_indices))}" if job.node else "-"
        duration = f"{job.duration:.1f} s" if job.duration is not None else "-"
        table.add_row(
            _label(job),
            job.status.value,
            where,
            progress,
            "-" if best is None else f"{best:.3f}",
            duration,
        )
    return table


def _poll(client: Client, ids: list[str], awaited: set[str]) -> Iterator[list[Job]]:
    """The jobs, read again every half second, until the awaited ones have ended."""
    while True:
        jobs = client.get_many(ids)
        yield jobs
        if all(job.done for job in jobs if job.id in awaited):
            return
        time.sleep(0.5)


def _ended(job: Job) -> str:
    _, best = read_progress(job)
    score = "-" if best is None else f"{best:.3f}"
    duration = "-" if job.duration is None else f"{job.duration:.1f} s"
    return f"{_label(job)} {job.status.value}: best score {score}, {duration}"


def _watch(client: Client, shown: list[Job], awaited: list[Job]) -> list[Job]:
    """Show every job's progress until the awaited ones end; the jobs, refreshed."""
    ids = list(dict.fromkeys(job.id for job in shown + awaited))
    waiting = {job.id for job in awaited}
    jobs: list[Job] = []
    if err().is_terminal and not err().is_dumb_terminal:
        with Live(console=err(), refresh_per_second=4) as live:
            for jobs in _poll(client, ids, waiting):
                live.update(_table(jobs, False))
        return jobs
    # Piped or logged, a live table cannot be redrawn in place: it would come out
    # whole on every stop. So each awaited job's end gets a line of its own.
    reported: set[str] = set()
    for jobs in _poll(client, ids, waiting):
        for job in jobs:
            if job.id in waiting and job.done and job.id not in reported:
                reported.add(job.id)
                err().print(_ended(job))
    return jobs


class SecondNode:
    """A second node on this machine: `ugro worker` under another node name, with
    simulated GPUs of its own. A job across nodes needs distinct nodes."""

    def __init__(self, settings: Settings, gpus: int) -> None:
        self.settings = settings
        self.name = f"{settings.node_name}-b"
        self.gpus = gpus
        self.log = settings.run_dir / f"worker-{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start its GPU workers and node agent, their output in ``self.log``."""
        ugro = Path(sys.executable).with_name("ugro")
        if not ugro.exists():
            raise StackError(f"the ugro command is missing beside {sys.executable}")
        env = os.environ | {
            "UGRO_NODE_NAME": self.name,
            "UGRO_GPU_BACKEND": f"fake:{self.gpus}",
        }
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(ugro), "worker"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped whole
                env=env,
                cwd=self.settings.data_dir,
            )

    def await_workers(self, client: Client, timeout: float) -> None:
        """Return once the client sees every GPU worker of this node live.

        Raises:
            StackError: when they exit or are not all live after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            workers = client.rt.live.workers(max_age=self.settings.worker_ttl)
            live = len({w.index for w in workers if w.node == self.name})
            if live >= self.gpus:
                return
            code = None if self.process is None else self.process.poll()
            if code is not None:
                raise StackError(f"node {self.name}'s workers exited ({code}); see {self.log}")
            if time.monotonic() > deadline:
                raise StackError(
                    f"node {self.name}: {live} of {self.gpus} GPU workers live after"
                    f" {timeout:.0f} s; see {self.log}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM its process group (a worker puts a running job back in the queue),
        SIGKILL what is left after the stop grace."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=self.settings.stop_grace + 20.0)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5.0)


def _await_gang(client: Client, job: Job) -> Job:
    """The job across nodes once it has ended, or as it is after ``GANG_TIMEOUT``."""
    with err().status(f"waiting for {job.name}..."):
        try:
            [job] = client.wait([job.id], timeout=GANG_TIMEOUT)
        except TimeoutError:
            return client.get(job.id)  # not ended: the demo fails
    nodes = ", ".join(job.paths.nodes())
    err().print(f"{job.name} {job.status.value}: on {nodes}, {job.duration or 0.0:.1f} s")
    return job


def _gang_report(job: Job, ranks: int) -> list[str]:
    """The job's results tree, its files relative to its folder, and each rank's
    last line of output."""
    root = job.job_dir
    found = [path.relative_to(root) for path in root.rglob("*") if path.is_file()]
    files = [path.as_posix() for path in sorted(found, key=lambda path: path.parts)]
    lines = [f"{job.name} {job.status.value}, its tree in jobs/{job.id}/:"]
    lines += [f"  {name}" for name in files]
    lines.append("its ranks' output (logs/rank_<r>.log):")
    for rank in range(ranks):
        try:
            text = job.paths.rank_log(rank).read_text(errors="replace")
        except OSError:
            text = ""
        output = [line for line in text.splitlines() if line.strip()]
        lines.append(f"  {output[-1] if output else f'rank {rank}: no output'}")
    return lines


def _read_scores(job: Job) -> dict[str, Any]:
    """The evaluation's ``evaluation_scores.json``; empty when it wrote none."""
    try:
        data = json.loads(job.paths.evaluation_scores.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _sweep_report(array: JobArray, evaluation: Job) -> tuple[list[str], bool]:
    """What the sweep found and what its evaluation made of it: lines of the report,
    and whether the evaluation scored the sweep's best point after all of them."""
    points = _ranked(array.tasks)
    ended = [job.finished_at for job in points if job.finished_at is not None]
    lines = [
        f"sweep {array.id} ({array.kind}): {array.summary()}; its points above,"
        " best validation accuracy first"
    ]
    scores = _read_scores(evaluation)
    if not evaluation.succeeded or "accuracy" not in scores:
        why = evaluation.error or "it wrote no evaluation_scores.json"
        lines.append(f"{evaluation.name} {evaluation.status.value}: {why}")
        return lines, False
    picked = next((job for job in points if job.id == scores.get("point")), None)
    label = _label(picked) if picked is not None else str(scores.get("point"))
    checkpoint = Path(str(scores.get("checkpoint"))).name
    after_all = (
        evaluation.started_at is not None
        and len(ended) == len(points)
        and all(evaluation.started_at >= end for end in ended)
    )
    lines.append(
        f"{evaluation.name} ran after {'all' if after_all else 'not all'} {len(points)} points"
        f" and evaluated {label} ({scores.get('point')}, {checkpoint}):"
        f" test accuracy {float(scores['accuracy']):.3f} on {scores.get('n_examples')} examples"
    )
    best = points[0] if points and read_progress(points[0])[1] is not None else None
    if best is None or picked is None or picked.id != best.id:
        lines.append(f"but the best point is {'none' if best is None else _label(best)}")
        return lines, False
    return lines, after_all


def run_demo(data_dir: str | None, gpus: int, keep: bool = False) -> int:
    """Run the demo end to end; the exit code is 0 when every job finished.

    Without ``data_dir`` the demo works in a temporary directory, removed at the
    end unless ``keep`` is set or the demo did not succeed (its logs then help).
    A directory the user named is always kept.
    """
    if not (EXAMPLES / "train.py").exists():
        raise StackError(f"the examples are missing from {EXAMPLES}: run from a ugro checkout")
    root = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="ugro-demo-"))
    # The demo runs on the embedded defaults, whatever this shell points at.
    for name in ("UGRO_REDIS_URL", "UGRO_DATABASE_URL"):
        os.environ.pop(name, None)
    os.environ["UGRO_DATA_DIR"] = str(root.absolute())
    os.environ["UGRO_GPU_BACKEND"] = f"fake:{gpus}"
    settings = Settings()
    err().print(f"data dir: {settings.data_dir}")
    failed: list[Job] | None = None  # None: the demo stopped before its end
    try:
        failed = _sweep(settings, gpus)
    finally:
        _tidy_up(settings, named=data_dir is not None, remove=failed == [] and not keep)
    return 1 if failed else 0


def _tidy_up(settings: Settings, named: bool, remove: bool) -> None:
    """Remove the demo's temporary directory, or say where it is kept and how to
    remove it: a demo must not leave megabytes in /tmp unsaid."""
    root = settings.data_dir
    if named:
        err().print(f"results tree: {settings.jobs_dir}")
        return
    if remove:
        try:
            shutil.rmtree(root)
        except OSError as exc:
            err().print(f"[yellow]warning:[/] could not remove {root}: {exc}")
        else:
            err().print(f"removed {root}; `ugro demo --keep` keeps its results tree")
            return
    # The command on a line of its own: a terminal's wrap does not split it.
    err().print(f"kept the results tree: {settings.jobs_dir}")
    err().print(f"remove it with: rm -rf {shlex.quote(str(root))}")


def _sweep(settings: Settings, gpus: int) -> list[Job]:
    """Start the stack and a second node, run the sweep (an evaluation of its best
    point waiting on all of it) and a job across the two nodes, stop them all; the
    jobs that did not finish (the evaluation too when it did not pick the best point)."""
    stack = Stack(settings)
    gang_gpus = min(gpus, GANG_GPUS)
    second = SecondNode(settings, gang_gpus)
    try:
        with err().status("starting the embedded Redis, GPU workers and beat..."):
            found = stack.up()
        err().print(f"up: {found}")
        # Its workers come up while the sweep runs: the job across nodes waits for them.
        second.start()
        err().print(f"starting node {second.name}: `ugro worker` on {gang_gpus} simulated GPUs")
        with Client(settings) as client:
            array, evaluation = client.sweep(lr_sweep(sys.executable))
            assert evaluation is not None  # (the demo's sweep has a then: job)
            lrs = ", ".join(map(format_value, LEARNING_RATES))
            err().print(f"submitted sweep {array.id}: {array.count} trainers, lr in {lrs}")
            err().print(f"then {evaluation.name}: evaluates the best point once all have finished")
            jobs = _watch(client, [*array.tasks, evaluation], array.tasks)
            with err().status(f"waiting for node {second.name}'s GPU workers..."):
                second.await_workers(client, NODE_START_TIMEOUT)
            gang = client.submit(allreduce(sys.executable, gang_gpus))
            err().print(
                f"submitted {gang.name}: {gang_gpus} GPUs on each of nodes {settings.node_name}"
                f" and {second.name}, one process a GPU"
            )
            jobs = _watch(client, jobs, [evaluation])
            gang = _await_gang(client, gang)
            array = client.get_array(array.id)
            [evaluation] = [job for job in jobs if job.id == evaluation.id]
            report, picked_best = _sweep_report(array, evaluation)
            out().print(_table(jobs, True), soft_wrap=False)  # a centred title
            out().print("\n".join(report), markup=False)
            out().print("\n".join(_gang_report(gang, GANG_NODES * gang_gpus)), markup=False)
            jobs.append(gang)
    finally:
        with err().status("stopping the stack..."):
            try:
                second.stop()
            finally:
                stack.down()
    failed = [job for job in jobs if not job.succeeded]
    for job in failed:
        why = job.error if job.done else f"not ended after {GANG_TIMEOUT:.0f} s"
        err().print(f"[red]{_label(job)} {job.status.value}: {why}[/]")
    if not failed and not picked_best:
        err().print(f"[red]{evaluation.name} did not evaluate the sweep's best point[/]")
        failed = [evaluation]
    return failed
