"""`ugro summary`: any day's summary, on demand."""

from __future__ import annotations

import json

import click

from ugro.cli.base import err, fail, main, settings_from_env


@main.command()
@click.option(
    "--date", "day", default=None, help="The day, YYYY-MM-DD (default: today in UGRO_TIMEZONE)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics JSON instead.")
def summary(day: str | None, as_json: bool) -> None:
    """Render one day's summary: to stdout, and to <data_dir>/summaries/."""
    from ugro.registry.store import Registry
    from ugro.summary.daily import write_summary
    from ugro.summary.day import parse_day, timezone_of, today

    settings = settings_from_env()
    tz = timezone_of(settings)
    current = today(tz)
    chosen = current if day is None else parse_day(day, tz)
    if chosen.date > current.date:
        fail(f"--date: {day} is in the future (today is {current.date} in {tz.key})", 2)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    registry = Registry(settings.effective_database_url)
    try:
        figures, markdown, files = write_summary(registry, settings, chosen)
    finally:
        registry.close()
    click.echo(json.dumps(figures.to_json(), indent=2) if as_json else markdown)
    written = ", ".join(str(path) for path in files.existing())
    err().print(f"written: {written}")
