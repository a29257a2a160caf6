"""How a run's progress reads in a table row, and how `ugro list`'s plain table
reads: one line per job, ids whole, styles only where a terminal shows them."""

from __future__ import annotations

import re

import pytest

from ugro.cli.plain import TextTable, styled
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


def jobs_table() -> TextTable:
    table = TextTable("ID", "NAME", "STATUS", "PROGRESS", fit="NAME")
    table.add_row("lr-0.1-7f3a2c1d", "a-long-sweep-name", ("finished", "green"), "########## 100%")
    table.add_row("lr-1-0b1e2f3a", "short", ("failed", "red"), "#####.....  50%")
    return table


def test_a_table_is_one_aligned_line_per_row_at_its_natural_width() -> None:
    lines = jobs_table().lines()
    assert lines == [
        " ID               NAME               STATUS    PROGRESS",
        " lr-0.1-7f3a2c1d  a-long-sweep-name  finished  ########## 100%",
        " lr-1-0b1e2f3a    short              failed    #####.....  50%",
    ]


def test_a_narrow_terminal_cuts_the_fit_column_and_never_an_id() -> None:
    lines = jobs_table().lines(width=56)
    assert max(len(line) for line in lines) == 56
    assert lines[1].split()[:2] == ["lr-0.1-7f3a2c1d", "a-long-swe…"]
    assert lines[2].split()[:2] == ["lr-1-0b1e2f3a", "short"]
    # however narrow: the cut column keeps a few letters, the rest stays whole
    assert jobs_table().lines(width=10)[1].split()[:3] == ["lr-0.1-7f3a2c1d", "a-lo…", "finished"]


def test_styles_are_shown_only_when_asked_and_never_move_the_columns() -> None:
    plain, colored = jobs_table().lines(), jobs_table().lines(color=True)
    assert not any("\x1b" in line for line in plain)
    assert colored[1].count("\x1b[32mfinished\x1b[0m") == 1
    assert [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in colored] == plain
    assert styled("x", "bold", color=False) == "x" and styled("x", "bold", color=True) != "x"
