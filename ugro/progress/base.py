"""Progress of a run: ProgressInfo, and the tracker interface each runner type fills.

A tracker reads a run's directory and says how far it got. Runner types:
``trainer`` (epoch-based) and ``evaluator`` (flat). A new runner type is one new
class in ``ugro/progress/`` registered in ``TRACKERS``.

``progress.json`` is written in the progress plan's format, the one our users'
tools read (``ProgressInfo.to_file``): ``completed_epochs``, ``progress_percentage``,
``early_stopped``, ``early_stopped_at_epoch``, ``runner_type``, ``total_epochs``,
``start_time`` and ``last_update_time`` (Unix seconds), ``best_score`` and
``latest_score`` (objects of metric name to value), ``error_message`` and
``warnings``; ugro's own fields (``status``, ``complete``, ``eta_seconds``,
``score_name``) sit beside them. Both that format and ugro's attribute names load.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, Field, ValidationError, model_validator

from ugro.errors import UgroError

# Which score to report, in order of preference; else the first number found.
_SCORE_KEYS = ("accuracy", "val_accuracy", "score", "f1", "auc")
# The plan's field names, and ugro's attribute each one holds.
_PLAN_NAMES = {
    "progress_percentage": "percent",
    "early_stopped_at_epoch": "early_stop_epoch",
    "start_time": "started_at",
    "last_update_time": "last_update",
    "error_message": "error",
}
# The scores the plan writes as objects of metric name to value.
_SCORES = ("best_score", "latest_score")
# A score with no name (set directly, not read from a scores file) is written as this.
_UNNAMED_SCORE = "score"


class ScanError(UgroError):
    """A directory whose runner type cannot be told (the message says what it saw)."""

    exit_code = 2


def first_score(data: Any) -> tuple[str | None, float | None]:
    """The run's headline score from a scores object: (metric name, value)."""
    if not isinstance(data, dict):
        return None, None
    for key in _SCORE_KEYS:
        if _is_number(data.get(key)):
            return key, float(data[key])
    for key, value in data.items():
        if key not in ("epoch", "step", "time") and _is_number(value):
            return key, float(value)
    return None, None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class ProgressInfo(BaseModel):
    """How far a run got. The first four fields are what older progress files held."""

    completed_epochs: int = 0
    total_epochs: int | None = None
    percent: float = 0.0
    early_stopped: bool = False
    early_stop_epoch: int | None = None
    runner_type: str | None = None
    started_at: datetime | None = None
    last_update: datetime | None = None
    score_name: str | None = None
    best_score: float | None = None
    latest_score: float | None = None
    eta_seconds: float | None = None
    complete: bool = False
    error: str | None = None
    warnings: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _from_plan_format(cls, data: Any) -> Any:
        """Read the plan's names and types as well as ugro's: a plan-format file
        must load with its values, not as 0 % (unknown names would be ignored)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        plan_format = any(name in data for name in _PLAN_NAMES)
        for plan, ours in _PLAN_NAMES.items():
            if plan in data:
                value = data.pop(plan)
                data.setdefault(ours, value)
        for key in ("started_at", "last_update"):
            if _is_number(data.get(key)):
                data[key] = datetime.fromtimestamp(float(data[key]), UTC)
        if plan_format and "complete" not in data:
            # The plan has no such field: a run at 100 % (or stopped early) is done.
            percent = data.get("percent")
            done = _is_number(percent) and float(percent) >= 100.0
            data["complete"] = done or bool(data.get("early_stopped"))
        return _scores_from_objects(data)

    def to_file(self, status: str | None = None) -> dict[str, Any]:
        """What ``progress.json`` holds: the plan's fields, then ugro's own."""
        name = self.score_name or _UNNAMED_SCORE
        return {
            "completed_epochs": self.completed_epochs,
            "progress_percentage": self.percent,
            "early_stopped": self.early_stopped,
            "early_stopped_at_epoch": self.early_stop_epoch,
            "runner_type": self.runner_type,
            "total_epochs": self.total_epochs,
            "start_time": _unix(self.started_at),
            "last_update_time": _unix(self.last_update),
            "best_score": {} if self.best_score is None else {name: self.best_score},
            "latest_score": {} if self.latest_score is None else {name: self.latest_score},
            "error_message": self.error,
            "warnings": list(self.warnings),
            # ugro's own, beside the plan's
            "status": status,
            "complete": self.complete,
            "eta_seconds": self.eta_seconds,
            "score_name": self.score_name,
        }

    @classmethod
    def load(cls, path: Path) -> tuple[ProgressInfo | None, str | None]:
        """A progress.json (the plan's format or ugro's names), or (None, a warning)
        when it is unreadable or corrupt."""
        try:
            return cls.model_validate(json.loads(path.read_text(encoding="utf-8"))), None
        except FileNotFoundError:
            return None, None
        except (OSError, ValueError, ValidationError) as exc:
            return None, f"{path.name} is unreadable: {str(exc).splitlines()[0]}"


def _scores_from_objects(data: dict[str, Any]) -> dict[str, Any]:
    """``best_score`` / ``latest_score`` given as {metric: value}: the value of the
    named score (``score_name``), else of the headline metric."""
    for key in _SCORES:
        scores = data.get(key)
        if not isinstance(scores, dict):
            continue
        name = data.get("score_name")
        if isinstance(name, str) and _is_number(scores.get(name)):
            data[key] = float(scores[name])
            continue
        found, value = first_score(scores)
        data[key] = value
        if found is not None and found != _UNNAMED_SCORE:
            data.setdefault("score_name", found)
    return data


def _unix(at: datetime | None) -> float | None:
    return None if at is None else at.timestamp()


class Tracker(ABC):
    """Reads one runner type's files."""

    #: The runner type's name, as in a job spec's ``kind`` mapping.
    runner_type: ClassVar[str]

    @classmethod
    @abstractmethod
    def recognises(cls, run_dir: Path) -> bool:
        """Whether the directory holds this runner type's files."""

    @classmethod
    @abstractmethod
    def expected(cls) -> str:
        """The file patterns this runner type writes, for error messages."""

    @abstractmethod
    def read(self, run_dir: Path, total_epochs: int | None) -> ProgressInfo:
        """The run's progress from its files."""
