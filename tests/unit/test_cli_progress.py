"""How a run's progress reads in a table row."""

from __future__ import annotations

import pytest

from ugro.cli.progress import progress_cells
from ugro.progress.base import ProgressInfo


@pytest.mark.parametrize(
    ("info", "cells"),
    [
        (ProgressInfo(runner_type="evaluator"), ("..........   0%", "-")),
        (ProgressInfo(runner_type="evaluator", complete=True, percent=100.0), ("done", "-")),
        (ProgressInfo(runner_type="trainer", completed_epochs=8), ("-", "8")),
        (ProgressInfo(runner_type="trainer"), ("-", "-")),
        (ProgressInfo(runner_type="trainer", complete=True, percent=100.0), ("done", "-")),
        (
            ProgressInfo(runner_type="trainer", completed_epochs=2, total_epochs=4, percent=50.0),
            ("#####.....  50%", "2/4"),
        ),
    ],
)
def test_progress_cells(info: ProgressInfo, cells: tuple[str, str]) -> None:
    assert progress_cells(info)[:2] == cells
