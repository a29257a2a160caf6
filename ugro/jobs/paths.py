"""The files of a run's folder, and of a job's: one owner for every name in them.

``RunPaths`` names what a run's folder holds, whoever made it: its metrics, its
progress, its logs, its epoch folders and their files, its evaluation scores. The
progress trackers and `ugro scan` read a run through it, ugro's jobs and folders
ugro never launched alike. ``JobPaths`` is the folder ugro makes for a job,
``<data_dir>/jobs/<job_id>/``: the same names, and what ugro writes there (the
tree, its metadata, its console, its attempts' logs). Nothing else in ugro joins
paths inside a run's folder.

Cheap to import (no pydantic, no ugro module at import): a running job may name
its files through it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

# The names in a run's folder (the README's "The results tree" draws the layout).
CONFIG = "config.json"
METADATA = "metadata.json"
METRICS = "metrics.jsonl"
PROGRESS = "progress.json"
CONSOLE = "console.log"
EVALUATION_SCORES = "evaluation_scores.json"
LOGS = "logs"
TRAINING_LOG = "training.log"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
#: ``nodes/<node>/``: a gang job's member on that node: its metadata, console, logs.
NODES = "nodes"
#: The name in a rank log template that the per-GPU launcher fills in.
RANK_FIELD = "{rank}"
#: ``epoch_<n>/``: a trainer's folder of one completed epoch.
EPOCH_DIR = re.compile(r"^epoch_(\d+)$")
#: An epoch folder's validation scores, which a trainer's progress reports.
VALIDATION_SCORES = "validation_scores.json"
#: The files a trainer's epoch folder holds when the epoch is complete, unless its
#: spec names others (``epoch_files``).
EPOCH_FILES = ("training_losses.pt", "optimizer_buffer.json", VALIDATION_SCORES)
#: What a run's folder holds, whatever its runner type, besides ``epoch_<n>/``: the
#: files the trackers read and those ugro writes beside them.
RUN_FILES = frozenset(
    {
        METRICS,
        EVALUATION_SCORES,
        PROGRESS,
        CONFIG,
        METADATA,
        CONSOLE,
        LOGS,
        CHECKPOINTS,
        TENSORBOARD,
        NODES,
    }
)


def epoch_of(name: str) -> int | None:
    """The epoch of a folder named ``epoch_<n>``; None for any other name."""
    match = EPOCH_DIR.match(name)
    return int(match.group(1)) if match else None


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` so that a reader sees the old file or the new, never half; readable
    by the lab as the rest of the tree is, whatever the umask.

    The temporary name is this process's and thread's own: no other writer uses it
    while this one lives, so one left there is a dead writer's, replaced. (A random
    name from ``mkstemp`` costs more than the write itself, three times per job.)"""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, 0o644)
    try:
        try:
            os.fchmod(fd, 0o644)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """``write_bytes_atomic`` of ``data`` as indented JSON."""
    text = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def _link_over(target: Path, name: Path) -> None:
    """Make ``name`` a hard link to ``target``, replacing what was there atomically."""
    try:
        os.link(target, name)  # the usual case: nothing there yet
        return
    except FileExistsError:
        pass
    if os.path.samefile(target, name):
        return
    tmp = name.with_name(f".{name.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.link(target, tmp)
    os.replace(tmp, name)


def build_tree(where: Path, config: bytes = b"") -> None:
    """The tree of one job at ``where`` (which must not exist), with ``config`` as its
    config.json. Not atomic by itself: build under a hidden name, then rename."""
    tree = RunPaths(where)
    os.mkdir(where)
    for folder in (tree.logs, tree.checkpoints, tree.tensorboard):
        os.mkdir(folder)
    for empty in (tree.metrics, tree.console):
        _touch(empty)
    with open(tree.config, "xb") as handle:
        handle.write(config)
    where.chmod(0o755)  # whatever the umask: readers on other accounts see results


def _rank_log_name(rank: int | str) -> str:
    return f"rank_{rank}.log"


def _touch(path: Path) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))


class RunPaths:
    """The files of the run whose folder is ``root``."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root!r})"

    @property
    def root(self) -> Path:
        return self._root

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def metadata(self) -> Path:
        return self.root / METADATA

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def progress(self) -> Path:
        return self.root / PROGRESS

    @property
    def console(self) -> Path:
        return self.root / CONSOLE

    @property
    def evaluation_scores(self) -> Path:
        """An evaluator's scores: the file whose presence says it is done."""
        return self.root / EVALUATION_SCORES

    @cached_property
    def logs(self) -> Path:
        return self.root / LOGS

    @property
    def training_log(self) -> Path:
        return self.logs / TRAINING_LOG

    def rank_log(self, rank: int) -> Path:
        return self.logs / _rank_log_name(rank)

    def attempt_logs(self, attempt: int) -> Path:
        return self.logs / f"attempt_{attempt}"

    def attempt_training_log(self, attempt: int) -> Path:
        """``logs/attempt_<n>/training.log``: what that attempt's job printed."""
        return self.attempt_logs(attempt) / TRAINING_LOG

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    def checkpoint(self, name: str) -> Path:
        """A checkpoint the job wrote under ``name`` (its own choice) in checkpoints/."""
        return self.checkpoints / name

    @property
    def tensorboard(self) -> Path:
        return self.root / TENSORBOARD

    def epoch(self, epoch: int) -> EpochPaths:
        """``epoch_<n>/``: a trainer's folder of epoch ``n``."""
        return self.epoch_named(f"epoch_{epoch}")

    def epoch_named(self, name: str) -> EpochPaths:
        """The epoch folder of this name, as a listing of the run's folder found it
        (``epoch_7``, or ``epoch_007``)."""
        return EpochPaths(self.root / name)

    def epochs(self) -> list[tuple[int, EpochPaths]]:
        """The epoch folders there are, by epoch, in order; none when the run's
        folder cannot be read."""
        try:
            entries = list(os.scandir(self.root))
        except OSError:
            return []
        found = []
        for entry in entries:
            epoch = epoch_of(entry.name)
            if epoch is not None and entry.is_dir():
                found.append((epoch, self.epoch_named(entry.name)))
        return sorted(found, key=lambda pair: pair[0])


class EpochPaths:
    """The files of one trainer epoch's folder, ``epoch_<n>/``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def file(self, name: str) -> Path:
        """A file the epoch holds when complete (one of ``EPOCH_FILES``, or the spec's)."""
        return self.root / name

    @property
    def validation_scores(self) -> Path:
        return self.root / VALIDATION_SCORES


@dataclass(frozen=True)
class JobPaths(RunPaths):
    """The folder of one of ugro's jobs, ``<data_dir>/jobs/<job_id>/``, and what
    ugro writes in it."""

    jobs_dir: Path
    job_id: str

    def __post_init__(self) -> None:
        # (imported here: a running job names its files without loading pydantic)
        from ugro.jobs.spec import check_job_id

        check_job_id(self.job_id)

    # (the paths a job's life asks for most, joined once: pathlib's joins are a
    # fair share of a short job's bookkeeping)
    @cached_property
    def root(self) -> Path:
        return self.jobs_dir / self.job_id

    def _attempt_rank_log(self, attempt: int) -> Path:
        return self.attempt_logs(attempt) / _rank_log_name(0)

    def start_attempt_logs(self, attempt: int) -> Path:
        """Make ``logs/attempt_<n>/rank_0.log``, the file the attempt's output goes
        to, and return it; ``name_attempt_logs`` gives it its other names."""
        rank_log = self._attempt_rank_log(attempt)
        rank_log.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(rank_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666))
        return rank_log

    def write_metadata(self, data: dict[str, Any]) -> None:
        """``metadata.json``, written whole (an attempt's start, its end, a lost
        attempt's): a reader sees the old file or the new one."""
        write_json_atomic(self.metadata, data)

    def name_attempt_logs(self, attempt: int) -> None:
        """Point ``training.log`` and ``rank_0.log``, in the attempt's folder and at
        the top of ``logs/``, at the attempt's rank 0 log: hard links, one file under
        several names, no copying. The top-level names always show the newest
        attempt; each attempt's own folder keeps its output apart."""
        rank_log = self._attempt_rank_log(attempt)
        names = (self.attempt_training_log(attempt), self.training_log, self.rank_log(0))
        for name in names:
            _link_over(rank_log, name)

    def create(self, config: dict[str, Any]) -> None:
        """Create the whole tree with its config, all or nothing.

        The tree is built under a hidden temporary name and renamed into place, so
        a reader never sees a half-made job directory and a failure leaves none.
        """
        text = json.dumps(config, indent=2, sort_keys=True, default=str) + "\n"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        staging = self.jobs_dir / f".new-{self.job_id}"
        try:
            build_tree(staging, text.encode())
            os.rename(staging, self.root)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def read_metadata(self) -> dict[str, Any]:
        """``metadata.json`` as the worker last wrote it (just the job's id if none)."""
        try:
            data = json.loads(self.metadata.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {"job_id": self.job_id}
        return data if isinstance(data, dict) else {"job_id": self.job_id}

    def update_metadata(self, **values: Any) -> None:
        """Change some fields of ``metadata.json`` (written by the worker) in place."""
        self.write_metadata(self.read_metadata() | values)

    def remove(self) -> None:
        """Remove the job's tree (used when a submission is rolled back)."""
        shutil.rmtree(self.root, ignore_errors=True)

    def append_console(self, line: str) -> None:
        """Append one of the orchestrator's own lines to ``console.log``. A task of
        an array has no folder before its first start (``ugro.execution.job_env``):
        its line is then only in the registry's events."""
        try:
            _append_line(self.console, line)
        except FileNotFoundError:
            if self.root.exists():
                raise

    # The runs of several processes: ranks, and a gang job's members ---------------

    def rank_log_template(self, attempt: int) -> Path:
        """Where the per-GPU launcher writes each rank's output in an attempt:
        ``logs/attempt_<n>/rank_{rank}.log``."""
        return self.attempt_logs(attempt) / _rank_log_name(RANK_FIELD)

    def start_rank_logs(self, attempt: int, ranks: list[int]) -> list[Path]:
        """Make ``logs/attempt_<n>/rank_<r>.log`` for each rank and return them:
        the files those ranks' output goes to (``name_rank_logs`` names them)."""
        folder = self.attempt_logs(attempt)
        folder.mkdir(parents=True, exist_ok=True)
        made = []
        for rank in ranks:
            path = folder / _rank_log_name(rank)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666))
            made.append(path)
        return made

    def name_rank_logs(self, attempt: int, ranks: list[int], node: str | None = None) -> None:
        """Give each rank's log of an attempt its other names: ``logs/rank_<r>.log``,
        and ``nodes/<node>/logs/rank_<r>.log`` for a gang job's member; rank 0's is
        also ``training.log``. Hard links, as ``name_attempt_logs``'."""
        for rank in ranks:
            if rank == 0:
                self.name_attempt_logs(attempt)
            else:
                _link_over(self.attempt_logs(attempt) / _rank_log_name(rank), self.rank_log(rank))
            if node is not None:
                where = self.node_logs(node)
                where.mkdir(parents=True, exist_ok=True)
                _link_over(self.rank_log(rank), where / _rank_log_name(rank))

    def node_dir(self, node: str) -> Path:
        """``nodes/<node>/``: what a gang job's member on ``node`` leaves."""
        from ugro.jobs.spec import check_node_name

        return self.root / NODES / check_node_name(node)

    def node_metadata(self, node: str) -> Path:
        return self.node_dir(node) / METADATA

    def node_console(self, node: str) -> Path:
        return self.node_dir(node) / CONSOLE

    def node_logs(self, node: str) -> Path:
        return self.node_dir(node) / LOGS

    def nodes(self) -> list[str]:
        """The nodes with a folder under ``nodes/`` (a gang job's members, every attempt)."""
        try:
            return sorted(entry.name for entry in os.scandir(self.root / NODES) if entry.is_dir())
        except OSError:
            return []

    def write_node_metadata(self, node: str, data: dict[str, Any]) -> None:
        self.node_dir(node).mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.node_metadata(node), data)

    def append_node_console(self, node: str, line: str) -> None:
        """Append one of ugro's lines about the member on ``node`` to its console.log."""
        self.node_dir(node).mkdir(parents=True, exist_ok=True)
        _append_line(self.node_console(node), line)


def _append_line(path: Path, line: str) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    # One write(2) on an O_APPEND descriptor: lines of concurrent writers (the
    # submitter, the worker) never interleave, and no text layer is built.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{stamp} {line.rstrip()}\n".encode())
    finally:
        os.close(fd)
