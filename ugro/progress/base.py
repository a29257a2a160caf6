"""Progress of a run: ProgressInfo, and the tracker interface each runner type fills.

A tracker reads a run's directory and says how far it got. Runner types:
``trainer`` (epoch-based) and ``evaluator`` (flat). A new runner type is one new
class in ``ugro/progress/`` registered in ``TRACKERS``.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from datetime import datetime
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, Field, ValidationError

from ugro.errors import UgroError


class ScanError(UgroError):
    """A directory whose runner type cannot be told (the message says what it saw)."""

    exit_code = 2


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

    @classmethod
    def load(cls, path: Path) -> tuple[ProgressInfo | None, str | None]:
        """A progress.json, or (None, a warning) when it is unreadable or corrupt."""
        try:
            return cls.model_validate(json.loads(path.read_text(encoding="utf-8"))), None
        except FileNotFoundError:
            return None, None
        except (OSError, ValueError, ValidationError) as exc:
            return None, f"{path.name} is unreadable: {str(exc).splitlines()[0]}"


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
