"""An array or sweep being submitted: its registry row and its record on disk
(``arrays/<id>.json``), from which each task's folder is made at its first start."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ugro.jobs.redact import redact_env
from ugro.jobs.spec import JobSpec
from ugro.runtime import Runtime


@dataclass(frozen=True)
class NewArray:
    """The array whose tasks a batch's jobs are (``ugro.registry.holds``)."""

    id: str
    name: str
    kind: str  # "array" | "sweep"
    max_running: int | None = None
    params: list[str] | None = None  # a sweep's parameter names
    template: JobSpec | None = None  # what its tasks were made from

    def record_path(self, rt: Runtime) -> Path:
        return rt.settings.arrays_dir / f"{self.id}.json"

    def write_record(
        self, rt: Runtime, count: int, now: datetime, submitted_by: str, submitted_from: str
    ) -> None:
        """``arrays/<id>.json``: what the array was submitted as (the template's
        secret values redacted), read when each task's folder is made."""
        template = self.template
        if template is not None:
            template = template.model_copy(update={"env": redact_env(template.env)})
        record = {
            "array_id": self.id,
            "name": self.name,
            "kind": self.kind,
            "count": count,
            "max_running": self.max_running,
            "params": self.params,
            "spec": template.model_dump(mode="json") if template is not None else None,
            "submitted_at": now.isoformat(),
            "submitted_by": submitted_by,
            "submitted_from": submitted_from,
        }
        path = self.record_path(rt)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.tmp")
        staging.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        staging.replace(path)

    def row(self, count: int, now: datetime) -> dict[str, Any]:
        params = json.dumps(self.params) if self.params is not None else None
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "count": count,
            "max_running": self.max_running,
            "created_at": now,
            "params": params,
        }
