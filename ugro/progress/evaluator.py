"""Evaluators: flat; complete when ``evaluation_scores.json`` exists and is non-empty."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from ugro.jobs.paths import EVALUATION_SCORES, RunPaths
from ugro.progress.base import ProgressInfo, Tracker, first_score


class EvaluatorTracker(Tracker):
    runner_type = "evaluator"

    @classmethod
    def recognises(cls, run_dir: Path) -> bool:
        return RunPaths(run_dir).evaluation_scores.is_file()

    @classmethod
    def expected(cls) -> str:
        return EVALUATION_SCORES

    def read(self, run_dir: Path, total_epochs: int | None) -> ProgressInfo:
        path = RunPaths(run_dir).evaluation_scores
        info = ProgressInfo(runner_type=self.runner_type, total_epochs=None)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return info
        if stat.st_size == 0:
            return info
        info.last_update = datetime.fromtimestamp(stat.st_mtime, UTC)
        try:
            name, score = first_score(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            info.warnings.append(f"{path.name} is unreadable: {exc}")
            return info
        info.complete, info.percent = True, 100.0
        info.score_name, info.best_score, info.latest_score = name, score, score
        return info
