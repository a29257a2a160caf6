"""`ugro metrics`: a job's logged metrics (its ``metrics.jsonl``) as a table, CSV or
JSON lines, followed as the job logs more with ``--follow``."""

from __future__ import annotations

import csv
import json
import sys
from datetime import datetime
from typing import Any, TextIO

import click

from ugro.cli.base import client_from_env, complete_job_ids, fail, main, short_lived
from ugro.cli.plain import escaped, shows_style, styled

# Fields shown first, whatever order a record has them in.
_FIRST = ("step", "time")
# The narrowest column of a followed table: a number to 6 significant digits fits.
_FOLLOW_WIDTH = 9


@main.command()
@click.argument("job_id", shell_complete=complete_job_ids)
@click.option("--last", "last", type=int, default=None, help="Only the last N records.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new records until the job ends.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (time as Unix seconds).")
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON lines.")
def metrics(job_id: str, last: int | None, follow: bool, as_csv: bool, as_json: bool) -> None:
    """Print the metrics a job logged (ugro.log_metrics), a record a line, oldest first.

    A table by default; a record that brings new fields prints the header again
    (with --csv too). Works while the stack is down."""
    if last is not None and last < 1:
        fail(f"--last: {last} is not a whole number of at least 1", 2)
    if as_csv and as_json:
        fail("--csv, --json: give one or the other", 2)
    if not follow:
        short_lived()
    # Followed, records come one at a time: columns start wide enough for most numbers
    # (6 significant digits), so that the rows stay aligned as they come.
    writer = (_CsvWriter if as_csv else _TableWriter)(sys.stdout, _FOLLOW_WIDTH if follow else 0)
    write = _json_lines if as_json else writer.write
    with client_from_env(connect=False) as client:
        if not follow:
            records = client.metrics(job_id, last)
            if not records:
                click.echo(f"job {client.get(job_id).id} has logged no metrics yet", err=True)
            write(records)
            return
        try:
            # one at a time: each record shows as soon as the job logs it
            for record in client.follow_metrics(job_id, last):
                write([record])
                sys.stdout.flush()
        except KeyboardInterrupt:
            pass


def _json_lines(records: list[dict[str, Any]]) -> None:
    for record in records:
        click.echo(json.dumps(record))


class _TableWriter:
    """Records as aligned lines under a header, printed again when the fields grow;
    records written later keep the columns and widths of those before them."""

    def __init__(self, stream: TextIO, min_width: int = 0) -> None:
        self.stream = stream
        self.min_width = min_width
        self.columns: list[str] = []
        self.widths: dict[str, int] = {}

    def write(self, records: list[dict[str, Any]]) -> None:
        grown = self._grow(records)
        rows = [{c: _cell(c, r.get(c)) for c in self.columns} for r in records]
        for row in rows:
            for column, text in row.items():
                self.widths[column] = max(self.widths[column], len(text))
        color = shows_style(self.stream)
        if grown:
            header = [
                styled(_heading(c).ljust(self.widths[c]), "bold", color) for c in self.columns
            ]
            self.stream.write(" " + "  ".join(header).rstrip() + "\n")
        for row in rows:
            cells = [row[c].ljust(self.widths[c]) for c in self.columns]
            self.stream.write(" " + "  ".join(cells).rstrip() + "\n")

    def _grow(self, records: list[dict[str, Any]]) -> bool:
        """Add the fields of ``records`` not shown yet; whether there were any."""
        new = _fields(records, self.columns)
        self.columns.extend(new)
        for column in new:
            self.widths[column] = max(len(_heading(column)), self.min_width)
        return bool(new)


class _CsvWriter(_TableWriter):
    """Records as CSV rows, values as logged, a header row when the fields grow."""

    def write(self, records: list[dict[str, Any]]) -> None:
        out = csv.writer(self.stream, lineterminator="\n")
        if self._grow(records):
            out.writerow(self.columns)
        for record in records:
            out.writerow([_csv_value(record.get(column)) for column in self.columns])


def _fields(records: list[dict[str, Any]], known: list[str]) -> list[str]:
    """The fields of ``records`` not in ``known``: step and time first, then in the
    order first seen."""
    seen = dict.fromkeys(key for record in records for key in record if key not in known)
    first = [name for name in _FIRST if name in seen]
    return first + [name for name in seen if name not in _FIRST]


def _heading(field: str) -> str:
    return escaped(field).upper()


def _cell(field: str, value: Any) -> str:
    """A value as the table shows it: numbers to 6 significant digits, the time of
    day for ``time``, ``-`` for a field the record lacks."""
    if value is None:
        return "-"
    if field == "time" and isinstance(value, int | float):
        return datetime.fromtimestamp(value).strftime("%H:%M:%S")
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        return escaped(value)
    return escaped(json.dumps(value))


def _csv_value(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float):
        return "" if value is None else value
    return json.dumps(value)
