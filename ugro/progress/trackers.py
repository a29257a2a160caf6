"""The runner types' trackers, in the order detection tries them, and how the
tracker of a run is found: from a job's kind, or from a directory's files.

Detection follows the progress plan's order: the files in the directory
(``evaluation_scores.json``: an evaluator; ``epoch_0/``, or epochs in
``metrics.jsonl``: a trainer); else the runner class its config names
(``runner.class`` ending in ``Evaluator`` or ``Trainer``); else an ``epochs`` key in
its config (a trainer that has not finished an epoch yet); and only then a
ScanError naming what it saw and what it expected.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ugro.jobs.paths import RunPaths
from ugro.progress.base import ScanError, Tracker
from ugro.progress.evaluator import EvaluatorTracker
from ugro.progress.trainer import TrainerTracker

TRACKERS: list[type[Tracker]] = [EvaluatorTracker, TrainerTracker]
# The ending of a config's runner class, and the runner type it names.
_RUNNER_CLASSES: dict[str, type[Tracker]] = {
    "Evaluator": EvaluatorTracker,
    "Trainer": TrainerTracker,
}


def tracker_for_kind(kind: str, expected_files: list[str] | None = None) -> Tracker:
    """The tracker of a job ugro launched (its spec's ``kind``)."""
    if kind == "eval":
        return EvaluatorTracker()
    return TrainerTracker(expected_files)


def read_config(run_dir: Path) -> dict[str, Any] | None:
    """A run's ``config.json`` (ugro's own holds the job's under ``spec``); None when
    it has none, or none that is a JSON object."""
    try:
        data = json.loads(RunPaths(run_dir).config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    spec = data.get("spec")
    return {**data, **spec} if isinstance(spec, dict) else data


def runner_class(config: dict[str, Any]) -> str | None:
    """The runner class a config names: ``runner: {class: ...}`` or ``runner.class``."""
    runner = config.get("runner")
    named = runner.get("class") if isinstance(runner, dict) else config.get("runner.class")
    return named if isinstance(named, str) and named else None


def detect(run_dir: Path) -> Tracker:
    """The tracker for a directory ugro did not launch; ScanError when none fits."""
    for tracker in TRACKERS:
        if tracker.recognises(run_dir):
            return tracker()
    config = read_config(run_dir)
    named = runner_class(config) if config is not None else None
    if named is not None:
        for ending, found in _RUNNER_CLASSES.items():
            if named.rsplit(".", 1)[-1].endswith(ending):
                return found()
    if config is not None and config.get("epochs") is not None:
        return TrainerTracker()  # planned, no epoch finished yet: 0 %
    raise ScanError(_unrecognised(run_dir, config, named))


def _unrecognised(run_dir: Path, config: dict[str, Any] | None, named: str | None) -> str:
    """What a directory of no known runner type showed, and what was expected."""
    try:
        seen = sorted(p.name + ("/" if p.is_dir() else "") for p in run_dir.iterdir())
    except OSError as exc:
        raise ScanError(f"{run_dir}: cannot read it ({exc.strerror})") from None
    shown = ", ".join(seen[:12]) + (", ..." if len(seen) > 12 else "") or "nothing"
    if config is None:
        told = "no readable config.json"
    elif named is not None:
        told = f"config.json names runner.class {named!r} and no epochs"
    else:
        told = "config.json names no runner.class and no epochs"
    patterns = "; ".join(f"{t.runner_type}: {t.expected()}" for t in TRACKERS)
    return (
        f"{run_dir}: no runner type recognised. Saw: {shown} ({told}). Expected one of: "
        f"{patterns}; or a config.json whose runner.class ends in "
        f"{' or '.join(_RUNNER_CLASSES)}, or with epochs"
    )
