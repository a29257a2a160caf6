"""Text a job wrote (its error line) is shown, never obeyed by the terminal."""

from __future__ import annotations

from ugro.cli.plain import TextTable, escaped


def test_control_characters_are_shown_as_escapes_and_the_rest_as_it_is() -> None:
    hostile = "boom\x1b]0;owned\x07\x1b[2J\nnext line\x9b31m"
    assert escaped(hostile) == "boom\\x1b]0;owned\\x07\\x1b[2J\\x0anext line\\x9b31m"
    assert escaped("café 東京 ok") == "café 東京 ok"


def test_a_table_row_with_a_newline_stays_one_line() -> None:
    table = TextTable("ID", "ERROR")
    table.add_row("job-1", ("a\nb\x1b[31m", "red"))
    lines = table.lines()
    assert len(lines) == 2 and "\x1b" not in lines[1] and "a\\x0ab\\x1b[31m" in lines[1]
