"""`ugro scan`: progress and status of experiment directories ugro did not launch."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ugro.cli.base import main, new_table, out, settings_from_env

if TYPE_CHECKING:
    from ugro.progress.base import ProgressInfo


def progress_cells(info: ProgressInfo | None) -> tuple[str, str, str, str]:
    """(progress, epochs, best score, ETA) for a table row.

    A percentage is shown only against a known total: a complete run with none
    (an evaluator, a trainer that wrote no epochs) shows ``done``, an incomplete
    trainer with none its epochs alone. An evaluator has no epochs, and a trainer
    that wrote none shows none: ``-``.
    """
    if info is None:
        return "-", "-", "-", "-"
    evaluator = info.runner_type == "evaluator"
    if info.complete and (evaluator or info.total_epochs is None):
        progress = "done"
    elif info.total_epochs is None and not evaluator:
        progress = "-"
    else:
        progress = _bar(info.percent)
    if evaluator:
        epochs = "-"
    elif info.total_epochs is None:
        epochs = str(info.completed_epochs or "-")
    else:
        epochs = f"{info.completed_epochs}/{info.total_epochs}"
    if info.early_stopped:
        epochs += f" (early stop at {info.early_stop_epoch})"
    best = "-" if info.best_score is None else f"{info.best_score:.4g}"
    # A complete run has nothing left to wait for: no ETA, not "0s".
    eta = "-" if info.eta_seconds is None or info.complete else _duration(info.eta_seconds)
    return progress, epochs, best, eta


def _bar(percent: float, width: int = 10) -> str:
    filled = round(percent / 100 * width)
    return "#" * filled + "." * (width - filled) + f" {percent:3.0f}%"


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


@main.command()
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--epochs", type=int, default=None, help="Planned epochs, when no config says.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option(
    "--verbose", "-v", is_flag=True, help="Also name the folders skipped as holding no run files."
)
def scan(path: Path, epochs: int | None, as_json: bool, verbose: bool) -> None:
    """Progress of a run's directory, or of every run directory in PATH.

    Folders in PATH with no run files at all (no epoch_<n>/, metrics.jsonl,
    evaluation_scores.json, progress.json, config.json, logs/, ...) are skipped; a
    folder with run files whose runner type cannot be told is shown failed, with its
    error, among the others, and the scan exits 2. --json prints each run as its
    progress.json would hold it, with its path.
    """
    from ugro.progress.scan import Scanner, run_dirs_under

    settings = settings_from_env()
    found = run_dirs_under(path.absolute())
    reports = Scanner(settings.stuck_after, settings.outdated_after).scan(found.runs, epochs)
    if as_json:
        click.echo(json.dumps([report.to_json() for report in reports], indent=2))
    else:
        table = new_table("RUN", "TYPE", "STATUS", "PROGRESS", "EPOCHS", "BEST", "ETA")
        for report in reports:
            info = report.progress
            table.add_row(
                report.path.name, info.runner_type or "?", report.status, *progress_cells(info)
            )
        out().print(table)
        for report in reports:
            for warning in report.progress.warnings:
                out().print(f"[yellow]warning:[/] {report.path.name}: {warning}")
    if verbose:
        # On stderr, like the errors: stdout stays the table, or JSON for scripts.
        for skipped in found.skipped:
            click.echo(f"skipped: {skipped.name}/ (no run files)", err=True)
    errors = [r.progress.error for r in reports if r.progress.error]
    for error in errors:
        click.echo(f"error: {error}", err=True)
    if errors:
        sys.exit(2)
