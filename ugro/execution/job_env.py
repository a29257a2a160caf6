"""What an attempt's process starts with: its environment (the job's own, its
secrets, ugro's variables, where to resume from) and, for one process a GPU, the
launcher's argv."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from ugro.jobs.paths import JobPaths
from ugro.jobs.spec import JobSpec
from ugro.registry.models import JobRow
from ugro.runtime import Runtime
from ugro.settings import Settings

# The bin folder of the virtualenv ugro runs from (None outside one): first on a
# job's PATH, so that its bare `python` is the one with ugro installed, as in an
# activated shell, whether or not the shell that ran `ugro up` had activated it.
_VENV_BIN = str(Path(sys.executable).parent) if sys.prefix != sys.base_prefix else None


def newest_checkpoint(checkpoints: Path) -> Path | None:
    """The most recently written file under ``checkpoints/``, if any."""
    newest: tuple[float, Path] | None = None
    for path in checkpoints.rglob("*"):
        try:
            if path.is_file() and not path.name.startswith("."):
                stamp = path.stat().st_mtime
                if newest is None or stamp > newest[0]:
                    newest = (stamp, path)
        except OSError:
            continue
    return newest[1] if newest else None


def job_environment(
    job: JobRow,
    spec: JobSpec,
    secrets: dict[str, str],
    paths: JobPaths,
    node: str,
    gpus: list[int],
) -> dict[str, str]:
    env = dict(os.environ)
    if _VENV_BIN is not None:
        path = env.get("PATH", os.defpath)
        if not path.startswith(_VENV_BIN + os.pathsep):
            env["PATH"] = _VENV_BIN + os.pathsep + path
    env.update(spec.env)
    env.update(secrets)
    env.update(
        {
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",  # indices as nvidia-smi shows them
            "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in gpus),
            "UGRO_JOB_ID": job.id,  # also the tag that finds every process of the job
            "UGRO_JOB_NAME": job.name,
            "UGRO_JOB_DIR": str(paths.root),
            "UGRO_CHECKPOINT_DIR": str(paths.checkpoints),
            "UGRO_TENSORBOARD_DIR": str(paths.tensorboard),
            "UGRO_ATTEMPT": str(job.attempt),
            "UGRO_NODE": node,
            "PYTHONUNBUFFERED": "1",  # a Python job's prints reach the log as they happen
        }
    )
    if spec.array is not None:
        env["UGRO_ARRAY_ID"] = spec.array.id
        env["UGRO_ARRAY_INDEX"] = str(spec.array.index)
        env["UGRO_ARRAY_COUNT"] = str(spec.array.count)
    for name, value in spec.params.items():
        env[f"UGRO_PARAM_{name.upper()}"] = str(value)
    env.pop("UGRO_RESUME_FROM", None)
    if job.attempt > 1 and (resume := newest_checkpoint(paths.checkpoints)) is not None:
        env["UGRO_RESUME_FROM"] = str(resume)
    return env


def per_gpu(
    env: dict[str, str], template: Path, command: list[str], settings: Settings
) -> list[str]:
    """The launcher's argv that runs ``command`` once a GPU (``ugro.execution.per_gpu``),
    each rank's output in ``template`` with its rank; ``env`` gets its grace."""
    env["UGRO_STOP_GRACE"] = str(settings.stop_grace)
    return [sys.executable, "-m", "ugro.execution.per_gpu", "--logs", str(template), "--", *command]


def ensure_task_tree(rt: Runtime, row: JobRow) -> None:
    """A task of an array gets its folder at its first start, not at submit (an
    array of thousands is submitted in a second): its config.json from its
    registry row and what its array was submitted as (``arrays/<id>.json``)."""
    paths = rt.paths(row.id)
    if row.array_id is None or paths.root.exists():
        return
    record: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        path = rt.settings.arrays_dir / f"{row.array_id}.json"
        record = json.loads(path.read_text(encoding="utf-8"))
    config = {
        "job_id": row.id,
        "spec": json.loads(row.spec),
        "array_id": row.array_id,
        "submitted_at": record.get("submitted_at") or row.created_at.isoformat(),
        "submitted_by": record.get("submitted_by"),
        "submitted_from": record.get("submitted_from"),
    }
    try:
        paths.create(config)
    except OSError:
        if not paths.root.exists():  # (else another member of a gang made it first)
            raise
    paths.append_console(f"accepted: {row.gpus} GPU(s), priority {row.priority}, in {row.array_id}")
