"""Trainers: epoch-based. An epoch is complete when its ``epoch_<n>/`` directory
holds every expected file, non-empty; runs that write no epoch directories are
read from the ``epoch`` field of ``metrics.jsonl`` instead."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ugro.jobs.paths import EPOCH_FILES, EpochPaths, RunPaths
from ugro.progress.base import ProgressInfo, Tracker, first_score

DEFAULT_FILES = list(EPOCH_FILES)
# Epochs whose pace predicts the ETA.
_PACE_WINDOW = 5
# The shortest stretch of those epochs that measures a pace, in seconds. Some file
# systems keep whole-second mtimes and a metrics record's `time` may be whole seconds
# too; epochs written within one second (a synthetic or replayed run) show no pace,
# and an ETA from them would read "0s" for a run that is not about to end.
_MIN_PACE_SPAN = 1.0


class TrainerTracker(Tracker):
    runner_type = "trainer"

    def __init__(self, expected_files: list[str] | None = None) -> None:
        self.files = expected_files or DEFAULT_FILES

    @classmethod
    def recognises(cls, run_dir: Path) -> bool:
        run = RunPaths(run_dir)
        return run.epoch(0).root.is_dir() or _metrics_have_epochs(run.metrics)

    @classmethod
    def expected(cls) -> str:
        return "epoch_<n>/ with " + ", ".join(DEFAULT_FILES) + "; or metrics.jsonl with 'epoch'"

    def read(self, run_dir: Path, total_epochs: int | None) -> ProgressInfo:
        run = RunPaths(run_dir)
        info = ProgressInfo(runner_type=self.runner_type, total_epochs=total_epochs)
        done: dict[int, float] = {}  # epoch -> when it was complete
        scores: list[tuple[int, str | None, float | None]] = []
        for epoch, folder in run.epochs():
            stamps = []
            for name in self.files:
                try:
                    stat = folder.file(name).stat()
                except FileNotFoundError:
                    break
                if stat.st_size == 0:
                    break
                stamps.append(stat.st_mtime)
            else:
                done[epoch] = max(stamps)
                scores.append((epoch, *self._scores(folder, info)))
        records = read_metrics(run.metrics, info.warnings)
        if not done:
            for record in records:
                if isinstance(record.get("epoch"), int):
                    done[record["epoch"]] = float(record.get("time", 0.0))
                    key, score = first_score(
                        {
                            k.removeprefix("val_"): v
                            for k, v in record.items()
                            if k.startswith("val_")
                        }
                    )
                    scores.append((record["epoch"], key, score))
        stop = next((r for r in records if r.get("early_stop")), None)
        if stop is not None:
            info.early_stopped = True
            info.early_stop_epoch = int(stop.get("epoch", max(done, default=0)))
        info.completed_epochs = max(done) + 1 if done else 0
        if done:
            info.last_update = datetime.fromtimestamp(max(done.values()), UTC)
        valued = [(e, n, s) for e, n, s in sorted(scores, key=lambda t: t[0]) if s is not None]
        if valued:
            info.score_name = valued[-1][1]
            info.latest_score = valued[-1][2]
            info.best_score = max(s for _, _, s in valued if s is not None)
        total = info.total_epochs
        if total:
            info.percent = min(100.0, 100.0 * info.completed_epochs / total)
            info.complete = info.completed_epochs >= total or info.early_stopped
            info.eta_seconds = _eta(done, total - info.completed_epochs)
        elif info.early_stopped:
            info.complete, info.percent = True, 100.0
        if info.early_stopped:
            info.percent, info.eta_seconds = 100.0, 0.0
        return info

    def _scores(self, folder: EpochPaths, info: ProgressInfo) -> tuple[str | None, float | None]:
        path = folder.validation_scores
        try:
            return first_score(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None, None
        except (OSError, ValueError) as exc:
            info.warnings.append(f"{folder.root.name}/{path.name} is unreadable: {exc}")
            return None, None


def _eta(done: dict[int, float], remaining: int) -> float | None:
    """Seconds left at the pace of the last few epochs."""
    if remaining <= 0:
        return 0.0
    stamps = [done[e] for e in sorted(done)][-(_PACE_WINDOW + 1) :]
    if len(stamps) < 2 or stamps[-1] - stamps[0] < _MIN_PACE_SPAN:
        return None  # no measurable pace: unknown, not "any moment now"
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1) * remaining


def _metrics_have_epochs(path: Path) -> bool:
    return any("epoch" in record for record in read_metrics(path, []))


def read_metrics(path: Path, warnings: list[str]) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl; a corrupt or truncated line becomes a warning."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            warnings.append(f"metrics.jsonl line {number} is not JSON (truncated?); skipped")
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
