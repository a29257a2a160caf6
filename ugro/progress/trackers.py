"""The runner types' trackers, in the order detection tries them, and how the
tracker of a run is found: from a job's kind, or from a directory's files."""

from __future__ import annotations

from pathlib import Path

from ugro.progress.base import ScanError, Tracker
from ugro.progress.evaluator import EvaluatorTracker
from ugro.progress.trainer import TrainerTracker

TRACKERS: list[type[Tracker]] = [TrainerTracker, EvaluatorTracker]


def tracker_for_kind(kind: str, expected_files: list[str] | None = None) -> Tracker:
    """The tracker of a job ugro launched (its spec's ``kind``)."""
    if kind == "eval":
        return EvaluatorTracker()
    return TrainerTracker(expected_files)


def detect(run_dir: Path) -> Tracker:
    """The tracker for a directory ugro did not launch; ScanError when none fits."""
    for tracker in TRACKERS:
        if tracker.recognises(run_dir):
            return tracker()
    try:
        seen = sorted(p.name + ("/" if p.is_dir() else "") for p in run_dir.iterdir())
    except OSError as exc:
        raise ScanError(f"{run_dir}: cannot read it ({exc.strerror})") from None
    shown = ", ".join(seen[:12]) + (", ..." if len(seen) > 12 else "") or "nothing"
    patterns = "; ".join(f"{t.runner_type}: {t.expected()}" for t in TRACKERS)
    raise ScanError(
        f"{run_dir}: no runner type recognised. Saw: {shown}. Expected one of: {patterns}"
    )
