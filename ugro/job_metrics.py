"""A job's metrics back: the records of its ``metrics.jsonl`` (what
``ugro.log_metrics`` appends), read whole or followed as they are written, and each
metric's final and best values, to compare runs side by side.

Which value of a metric is its best, by the tokens of its name (``val_loss``: val,
loss), looked at in this order: the smallest for a loss (a token starting ``loss``,
``err``, ``perplexity``, ``ppl``, ``mse``, ``mae``, ``mape``, ``rmse``, ``nll``, ``wer``,
``cer``...); the largest for a score (``acc``, ``score``, ``f1``, ``auc``,
``precision``, ``recall``, ``bleu``, ``map``, ``iou``...), and for the score the
job's progress reports; none for any other name (a learning rate has no best).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ugro.job import Job

#: What every record carries beside its metrics (``ugro.log_metrics``).
BOOKKEEPING = ("step", "time")
# Fields a record may carry that are not metrics either: the trainer's epoch counter
# and its early-stop mark (``ugro.progress.trainer``).
_NOT_METRICS = frozenset((*BOOKKEEPING, "epoch", "early_stop"))
# A name's tokens, split at anything but letters and digits (``val_loss``: val, loss).
_TOKEN = re.compile(r"[a-z0-9]+")
# Token starts that say which way is better (``top1_acc``, ``rouge1``, ``val_mse``).
_LOWER_IS_BETTER = (
    "loss", "err", "perplexity", "ppl", "mse", "mae", "mape", "rmse", "nll", "wer", "cer",
)  # fmt: skip
_HIGHER_IS_BETTER = (
    "acc", "score", "f1", "auc", "precision", "recall", "bleu", "rouge", "map", "iou",
    "dice", "r2", "top1", "top5", "reward",
)  # fmt: skip

Direction = Literal["max", "min"]


def parse_records(data: bytes) -> list[dict[str, Any]]:
    """The JSON objects of whole lines; a corrupt or truncated line is skipped (a
    job killed mid-write leaves one)."""
    found = []
    for line in data.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            found.append(record)
    return found


def read_records(path: Path, last: int | None = None) -> list[dict[str, Any]]:
    """The records of a metrics file, the last ``last`` of them when given (none
    when the file is missing)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    records = parse_records(data)
    return records[-last:] if last else records


class _RecordFollower:
    """Reads whole lines added to a file since the last look, starting over when
    the file is replaced (a new attempt's) or cut short."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.inode: int | None = None

    def read_new(self) -> tuple[bool, list[dict[str, Any]]]:
        """(whether the file was replaced, the records added since the last read)."""
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return False, []
        with handle:
            st = os.fstat(handle.fileno())
            replaced = self.inode is not None and st.st_ino != self.inode
            if replaced or st.st_size < self.offset:
                self.offset, replaced = 0, True
            self.inode = st.st_ino
            handle.seek(self.offset)
            data = handle.read()
        whole = data[: data.rfind(b"\n") + 1]  # a line being written waits for its end
        self.offset += len(whole)
        return replaced, parse_records(whole)


def follow_records(
    read_job: Callable[[str], Job],
    job: Job,
    path: Path,
    last: int | None = None,
    follow: bool = False,
    poll: float = 0.2,
) -> Iterator[dict[str, Any]]:
    """The records of ``path`` (the last ``last`` of them); with ``follow``, each
    record added after them until the job has ended (``read_job`` reads it anew),
    as ``ugro.job_logs.follow_log`` follows a log."""
    follower = _RecordFollower(path)
    _, records = follower.read_new()
    yield from records[-last:] if last else records
    while follow:
        if job.done:
            # Its last lines were written before it ended: one more read gets them.
            yield from follower.read_new()[1]
            return
        time.sleep(poll)
        job = read_job(job.id)
        yield from follower.read_new()[1]


def metric_names(records: list[dict[str, Any]]) -> list[str]:
    """The numeric fields of the records that are metrics, in the order first seen."""
    names: dict[str, None] = {}
    for record in records:
        for key, value in record.items():
            if key not in _NOT_METRICS and _is_number(value):
                names.setdefault(key)
    return list(names)


def direction(name: str, score_name: str | None = None) -> Direction | None:
    """Which way ``name`` gets better (see the module's docstring); ``score_name``:
    the score the job's progress reports, a score when its name says nothing."""
    tokens = _TOKEN.findall(name.lower())
    if any(token.startswith(_LOWER_IS_BETTER) for token in tokens):
        return "min"
    if any(token.startswith(_HIGHER_IS_BETTER) for token in tokens):
        return "max"
    if score_name and name in (score_name, f"val_{score_name}"):
        return "max"
    return None


@dataclass(frozen=True)
class MetricSummary:
    """One metric of one job: its last value and its best, with their steps."""

    final: float
    final_step: Any
    best: float | None
    best_step: Any
    direction: Direction | None


def summarise(
    records: list[dict[str, Any]], score_name: str | None = None
) -> dict[str, MetricSummary]:
    """Each metric's final and best values (see ``direction``), by name."""
    summaries = {}
    for name in metric_names(records):
        values = [(r[name], r.get("step")) for r in records if _is_number(r.get(name))]
        way = direction(name, score_name)
        final, final_step = values[-1]
        best, best_step = None, None
        if way is not None:
            pick = max if way == "max" else min
            # (max and min keep the first of equal values: the first step to reach it)
            best, best_step = pick(values, key=lambda pair: pair[0])
        summaries[name] = MetricSummary(float(final), final_step, _float(best), best_step, way)
    return summaries


def records_frame(records: list[dict[str, Any]]) -> Any:
    """The records as a pandas DataFrame, a column per field.

    Raises:
        ImportError: pandas is not installed (ugro does not need it).
    """
    try:
        pandas = importlib.import_module("pandas")
    except ImportError as exc:
        raise ImportError(
            "pandas is not installed: `pip install pandas` for a DataFrame, or use"
            " Client.metrics, which returns the records as dicts"
        ) from exc
    return pandas.DataFrame.from_records(records)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
