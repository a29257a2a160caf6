"""The `ugro` command's group, error mapping and shared helpers.

Errors print one line naming what was wrong; exit 2 for bad input, 3 when the
stack is not running, 1 for anything else.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any, NoReturn

import click
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

from ugro.errors import UgroError
from ugro.settings import Settings

# Piped to another program, a table keeps its natural width: nothing is cut.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 250)
# Piped or logged, a message stays on one line, so a command it suggests (`chmod 600
# <path>`) can be copied whole; on a terminal it wraps between words.
err = Console(stderr=True, highlight=False, soft_wrap=not sys.stderr.isatty())


def fail(message: str, code: int) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", markup=True)
    sys.exit(code)


class UgroGroup(click.Group):
    """Maps ugro's errors to one line on stderr and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UgroError as exc:
            fail(str(exc), exc.exit_code)
        except ValidationError as exc:
            fail(str(exc), 2)
        except TimeoutError as exc:
            fail(str(exc), 124)


def settings_from_env() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        bad = "; ".join(
            f"UGRO_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        fail(f"invalid setting: {bad}", 2)


def client_from_env(connect: bool = True) -> Any:
    """The client of the environment's settings; without ``connect``, Redis is
    reached only when a call needs it (read-only commands work while it is down)."""
    from ugro.client import Client

    return Client(settings_from_env(), connect=connect)


def age(when: datetime | None) -> str:
    if when is None:
        return "-"
    return span((datetime.now(UTC) - when).total_seconds())


def span(seconds: float) -> str:
    """A length of time in its largest whole unit: 45s, 4m, 3h, 2d."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


STATUS_STYLE = {
    "finished": "green",
    "running": "cyan",
    "placed": "cyan",
    "queued": "yellow",
    "failed": "red",
    "lost": "red",
    "cancelled": "magenta",
    "stuck": "red",
    "outdated": "dim",
}


@click.group(cls=UgroGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ugro")
def main() -> None:
    """ugro: run GPU jobs for a machine-learning lab."""


def progress_bar() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err,
        transient=True,
    )
