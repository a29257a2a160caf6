"""``ugro.log_metrics``: what a running job calls to record a step's values.

Kept free of ugro's heavier imports: a training script imports only this.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

_warned = False


def log_metrics(step: int, **values: Any) -> None:
    """Append ``{"step": step, "time": ..., **values}`` to the job's metrics.jsonl.

    Inside a ugro job the file is ``$UGRO_JOB_DIR/metrics.jsonl``. Outside one
    (no ``UGRO_JOB_DIR``) nothing is written and a warning says so once, so the same
    script runs by hand.
    """
    global _warned
    job_dir = os.environ.get("UGRO_JOB_DIR")
    if not job_dir:
        if not _warned:
            warnings.warn(
                "ugro.log_metrics: not inside a ugro job (no UGRO_JOB_DIR); "
                "metrics are not recorded",
                stacklevel=2,
            )
            _warned = True
        return
    record = {"step": step, "time": time.time(), **values}
    line = json.dumps(record, default=float) + "\n"
    # One write of a whole line in append mode: concurrent writers do not interleave.
    from ugro.jobs.paths import RunPaths  # on first use: `import ugro` stays cheap

    with RunPaths(Path(job_dir)).metrics.open("a", encoding="utf-8") as handle:
        handle.write(line)
