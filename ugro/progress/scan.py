"""Progress scans: ProgressInfo and status for many run directories, incrementally.

A run's status is one of ``running``, ``finished``, ``stuck``, ``failed`` or
``outdated`` (see ``decide_status``). A directory whose files have not changed
since the last scan is not read again: its signature (the stat of its top-level
entries and of its newest epoch directory's files) is compared with the cache's.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ugro.jobs.paths import EVALUATION_SCORES, METRICS, RUN_FILES, RunPaths, epoch_of
from ugro.progress.base import ProgressInfo, ScanError, Tracker
from ugro.progress.trackers import detect, read_config

RUNNING, FINISHED, STUCK, FAILED, OUTDATED = "running", "finished", "stuck", "failed", "outdated"


def decide_status(
    alive: bool | None,
    complete: bool,
    last_change: float | None,
    ended_at: float | None,
    now: float,
    stuck_after: float,
    outdated_after: float,
) -> str:
    """A run's status from plain facts. Pure.

    Args:
        alive: whether its process runs; None when nobody knows (a directory ugro
            did not launch: then a run unchanged for the stuck window counts failed).
        complete: the tracker found every planned epoch, or the evaluation scores.
        last_change: newest modification of its logs, metrics and epoch files.
        ended_at: when it ended, if it did (else its last change is used).
    """
    quiet = last_change is not None and now - last_change > stuck_after
    if alive:
        return STUCK if quiet else RUNNING
    if complete:
        return OUTDATED if is_outdated(ended_at or last_change, now, outdated_after) else FINISHED
    if alive is None and not quiet:
        return RUNNING
    return FAILED


def is_outdated(ended_at: float | None, now: float, outdated_after: float) -> bool:
    """Whether a run that completed at ``ended_at`` (unix s) is outdated: it ended
    more than ``outdated_after`` seconds ago. Pure; also how ugro's own finished jobs
    are shown (``Job.shown_status``)."""
    return ended_at is not None and now - ended_at > outdated_after


def _entries(directory: Path) -> list[tuple[str, int, int]]:
    """(name, mtime_ns, size) of each entry, sorted; an entry removed between the
    listing and its stat (a writer's temporary file renamed into place) is skipped."""
    found = []
    with os.scandir(directory) as scan:
        for entry in scan:
            try:
                stat = entry.stat()
            except FileNotFoundError:
                continue
            found.append((entry.name, stat.st_mtime_ns, stat.st_size))
    return sorted(found)


def signature(run_dir: Path) -> tuple[Any, ...]:
    """What changes when any file a tracker reads changes."""
    entries = _entries(run_dir)
    epochs = [(epoch, name) for name, _, _ in entries if (epoch := epoch_of(name)) is not None]
    inner: list[tuple[str, int, int]] = []
    if epochs:
        # The newest epoch gone mid-scan: the next scan sees the change.
        with contextlib.suppress(FileNotFoundError):
            inner = _entries(RunPaths(run_dir).epoch_named(max(epochs)[1]).root)
    return (tuple(entries), tuple(inner))


# Top-level files whose modification counts as a run's activity (besides epoch_*/),
# and the run logs trainers and evaluators write beside them.
_ACTIVITY_FILES = frozenset({METRICS, EVALUATION_SCORES})
_ACTIVITY_LOGS = ("train_val*.log", "eval_*.log")


def is_activity(name: str) -> bool:
    """Whether a change to this top-level entry of a run counts as its activity."""
    return (
        name in _ACTIVITY_FILES
        or epoch_of(name) is not None
        or any(fnmatch.fnmatchcase(name, pattern) for pattern in _ACTIVITY_LOGS)
    )


Entries = Sequence[tuple[str, int, int]]


def last_change(run_dir: Path, entries: Entries | None = None) -> float | None:
    """Newest modification among the run's logs (``logs/training.log``,
    ``train_val*.log``, ``eval_*.log``), metrics and epoch directories.
    ``entries``: the run directory's own, as ``signature`` just listed them (saves
    listing it again)."""
    if entries is None:
        try:
            entries = _entries(run_dir)
        except OSError:
            entries = []
    stamps = [mtime / 1e9 for name, mtime, _ in entries if is_activity(name)]
    with contextlib.suppress(OSError):
        stamps.append(RunPaths(run_dir).training_log.stat().st_mtime)
    return max(stamps) if stamps else None


def total_epochs_of(run_dir: Path, given: int | None) -> int | None:
    """Planned epochs: as given, else from a config.json beside the run."""
    if given is not None:
        return given
    for where in (run_dir, run_dir.parent):
        epochs = (read_config(where) or {}).get("epochs")
        if isinstance(epochs, int):
            return epochs
    return None


@dataclass
class RunReport:
    path: Path
    status: str
    progress: ProgressInfo

    def to_json(self) -> dict[str, Any]:
        """The run's path, then its progress as ``progress.json`` would hold it."""
        return {"path": str(self.path), **self.progress.to_file(self.status)}


class Scanner:
    """Scans run directories, re-reading only those whose files changed."""

    def __init__(self, stuck_after: float, outdated_after: float) -> None:
        self.stuck_after = stuck_after
        self.outdated_after = outdated_after
        self._cache: dict[tuple[Path, int | None], tuple[tuple[Any, ...], ProgressInfo]] = {}
        self.read_count = 0  # directories actually read by the last scan

    def progress(self, run_dir: Path, tracker: Tracker | None, epochs: int | None) -> ProgressInfo:
        sig = signature(run_dir)
        cached = self._cache.get((run_dir, epochs))
        if cached is not None and cached[0] == sig:
            return cached[1]
        self.read_count += 1
        info = (tracker or detect(run_dir)).read(run_dir, total_epochs_of(run_dir, epochs))
        self._cache[(run_dir, epochs)] = (sig, info)
        return info

    def last_change(self, run_dir: Path, epochs: int | None) -> float | None:
        """``last_change`` of a run that ``progress`` has just looked at."""
        cached = self._cache.get((run_dir, epochs))
        return last_change(run_dir, cached[0][0] if cached else None)

    def scan(self, run_dirs: Iterable[Path], epochs: int | None = None) -> list[RunReport]:
        """Reports for directories ugro did not launch (runner type detected)."""
        self.read_count = 0
        now = time.time()
        reports = []
        for run_dir in run_dirs:
            try:
                info = self.progress(run_dir, None, epochs)
            except ScanError as exc:
                reports.append(RunReport(run_dir, FAILED, ProgressInfo(error=str(exc))))
                continue
            changed = self.last_change(run_dir, epochs)
            status = decide_status(
                None, info.complete, changed, None, now, self.stuck_after, self.outdated_after
            )
            reports.append(RunReport(run_dir, status, info))
        return reports


def has_run_files(directory: Path) -> bool:
    """Whether the directory holds any file or folder a run writes (``RUN_FILES``,
    ``epoch_<n>/``); an unreadable one counts, so that its scan says why."""
    try:
        names = [entry.name for entry in os.scandir(directory)]
    except OSError:
        return True
    return any(name in RUN_FILES or epoch_of(name) is not None for name in names)


@dataclass
class RunDirs:
    """The run directories a scan of PATH reads, and the folders it skipped."""

    runs: list[Path]
    skipped: list[Path]


def run_dirs_under(path: Path) -> RunDirs:
    """PATH itself when it is one run's directory, else the run directories in it.

    Folders in PATH with no run files at all are skipped. PATH is taken as one run
    (so that its scan fails, saying what it saw) when it has none in it but holds
    run files itself; ScanError when it is neither.
    """
    from ugro.progress.trackers import TRACKERS

    if any(tracker.recognises(path) for tracker in TRACKERS):
        return RunDirs([path], [])
    try:
        children = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as exc:
        raise ScanError(f"{path}: cannot read it ({exc.strerror})") from None
    runs = [child for child in children if has_run_files(child)]
    skipped = [child for child in children if child not in runs]
    if runs:
        return RunDirs(runs, skipped)
    if has_run_files(path) or not children:
        detect(path)  # raises, naming what it saw and what it expected
    raise ScanError(
        f"{path}: no run directory in it; {len(skipped)} folder(s) with no run files "
        f"({_names(skipped)}). A run holds epoch_<n>/ or any of: {', '.join(sorted(RUN_FILES))}"
    )


def _names(paths: list[Path], shown: int = 12) -> str:
    return ", ".join(p.name + "/" for p in paths[:shown]) + (", ..." if len(paths) > shown else "")


def isotime(stamp: float | None) -> str | None:
    return None if stamp is None else datetime.fromtimestamp(stamp, UTC).isoformat()
