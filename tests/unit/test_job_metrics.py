"""Reading a job's metrics.jsonl back (ugro/job_metrics.py): which way a metric gets
better, each metric's final and best, and following a file as it is written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ugro.job_metrics import direction, follow_records, metric_names, read_records, summarise


@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("loss", "min"),
        ("val_loss", "min"),
        ("train/error_rate", "min"),
        ("mape", "min"),
        ("val_accuracy", "max"),
        ("top1_acc", "max"),
        ("rouge1", "max"),
        ("macro_f1", "max"),
        ("dice_coef", "max"),
        ("lr", None),
        ("grad_norm", None),
    ],
)
def test_the_name_says_which_way_is_better(name: str, expected: str | None) -> None:
    assert direction(name) == expected


@pytest.mark.timeout(5)
def test_the_progress_score_is_a_score_unless_its_name_says_loss() -> None:
    assert direction("quality", "quality") == "max"
    assert direction("val_quality", "quality") == "max"
    assert direction("loss", "loss") == "min"


@pytest.mark.timeout(5)
def test_final_and_best_with_the_first_step_to_reach_it() -> None:
    records = [
        {"step": 0, "time": 1.0, "loss": 0.9, "acc": 0.5, "lr": 0.1, "epoch": 0},
        {"step": 1, "time": 2.0, "loss": 0.4, "acc": 0.7, "note": "x", "flag": True},
        {"step": 2, "time": 3.0, "loss": 0.4, "acc": 0.6, "lr": 0.01},
    ]
    assert metric_names(records) == ["loss", "acc", "lr"]
    found = summarise(records)
    assert (found["loss"].final, found["loss"].best, found["loss"].best_step) == (0.4, 0.4, 1)
    assert (found["acc"].final, found["acc"].best, found["acc"].best_step) == (0.6, 0.7, 1)
    assert (found["lr"].final, found["lr"].final_step, found["lr"].best) == (0.01, 2, None)


@pytest.mark.timeout(5)
def test_a_partial_line_waits_for_its_end_and_a_replaced_file_starts_over(
    tmp_path: Path,
) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0}\nnot json\n{"step": 1')
    assert read_records(path) == [{"step": 0}]
    assert read_records(tmp_path / "missing.jsonl") == []
    from ugro.job_metrics import _RecordFollower

    follower = _RecordFollower(path)
    assert follower.read_new() == (False, [{"step": 0}])
    with path.open("a") as handle:
        handle.write(', "loss": 2}\n')
    assert follower.read_new() == (False, [{"step": 1, "loss": 2}])
    replacement = tmp_path / "new.jsonl"
    replacement.write_text(json.dumps({"step": 0, "attempt": 2}) + "\n")
    os.replace(replacement, path)
    assert follower.read_new() == (True, [{"step": 0, "attempt": 2}])


@pytest.mark.timeout(5)
def test_without_follow_the_last_records_only(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": n}) + "\n" for n in range(5)))
    records = follow_records(lambda _: None, None, path, last=2)
    assert list(records) == [{"step": 3}, {"step": 4}]
