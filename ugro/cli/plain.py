"""Plain lines for the commands people run all day (`ugro list`, `ugro status`):
a table as text, and the few styles a terminal shows.

These write text with ANSI styles themselves instead of through rich, whose import
and layout cost more than the rest of such a command's work. A table prints one
line per row at its natural width, so ``grep`` and ``cut`` see one job per line;
on a terminal too narrow for it, the column named ``fit`` is cut short to fit,
and no other (an id is copied into other commands: it is never cut).
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import TextIO

# ANSI SGR codes of the styles ugro's plain output uses (``base.STATUS_STYLE``'s).
_SGR = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "magenta": "35",
    "cyan": "36",
}

#: A cell of a table: its text, or its text and a style (a name in ``_SGR``).
Cell = str | tuple[str, str]

_GAP = "  "
_ELLIPSIS = "…"


def shows_style(stream: TextIO) -> bool:
    """Whether text to ``stream`` should carry styles: a terminal that shows them,
    unless NO_COLOR is set (https://no-color.org)."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return stream.isatty()


def styled(text: str, style: str, color: bool) -> str:
    """``text`` in ``style`` when ``color``, else as it is."""
    code = _SGR.get(style)
    if not color or code is None or not text:
        return text
    return f"\x1b[{code}m{text}\x1b[0m"


class TextTable:
    """Rows of cells under headings, printed as aligned plain lines."""

    def __init__(self, *headings: str, fit: str | None = None) -> None:
        self.headings = list(headings)
        self.rows: list[list[Cell]] = []
        self._fit = self.headings.index(fit) if fit is not None else None

    def add_row(self, *cells: Cell) -> None:
        if len(cells) != len(self.headings):
            raise ValueError(f"{len(cells)} cells for {len(self.headings)} columns")
        self.rows.append([_escaped(cell) for cell in cells])

    def lines(self, color: bool = False, width: int | None = None) -> list[str]:
        """The table's lines; ``width``: the terminal's, to fit the ``fit`` column to."""
        widths = [
            max([len(heading)] + [len(_text(row[i])) for row in self.rows])
            for i, heading in enumerate(self.headings)
        ]
        if width is not None and self._fit is not None:
            # one leading space, then columns two spaces apart
            over = 1 + sum(widths) + len(_GAP) * (len(widths) - 1) - width
            floor = max(len(self.headings[self._fit]), len(_ELLIPSIS) + 4)
            widths[self._fit] = max(floor, widths[self._fit] - max(over, 0))
        header: list[Cell] = [(heading, "bold") for heading in self.headings]
        return [self._line(row, widths, color) for row in [header, *self.rows]]

    def _line(self, row: list[Cell], widths: list[int], color: bool) -> str:
        cells = []
        for index, (cell, size) in enumerate(zip(row, widths, strict=True)):
            text, style = cell if isinstance(cell, tuple) else (cell, "")
            if index == self._fit and len(text) > size:
                text = text[: size - len(_ELLIPSIS)] + _ELLIPSIS
            cells.append(styled(text, style, color) + " " * (size - len(text)))
        return " " + _GAP.join(cells).rstrip()

    def print(self, stream: TextIO | None = None) -> None:
        """Print the table to ``stream`` (stdout): styled and fitted on a terminal."""
        stream = stream or sys.stdout
        terminal = stream.isatty()
        width = shutil.get_terminal_size().columns if terminal else None
        stream.write("\n".join(self.lines(shows_style(stream), width)) + "\n")


#: Control characters shown as escapes: a job's error line comes from its own log,
#: and a terminal must not take its bytes for commands (or a table its newlines for
#: rows).
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}


def escaped(text: str) -> str:
    """``text`` with its control characters as ``\\xNN`` escapes."""
    return text.translate(_CONTROL)


def _escaped(cell: Cell) -> Cell:
    return (escaped(cell[0]), cell[1]) if isinstance(cell, tuple) else escaped(cell)


def _text(cell: Cell) -> str:
    return cell[0] if isinstance(cell, tuple) else cell
