"""The `ugro` command's group, error mapping and shared helpers.

Errors print one line naming what was wrong; exit 2 for bad input, 3 when the
stack is not running, 1 for anything else.

A command people type all day must answer at once, and most of a short command's
time is imports: so at import this module and the command modules load click and
nothing else. Rich, the settings and the client load when a command uses them,
and ``ugro --help`` loads none of them.

The rest of such a command's time is Python's cyclic garbage collector passing
over the objects those imports made (SQLAlchemy's, pydantic's), again and again
while they load and once more at exit, when none of them is garbage. So a command
hands the collector nothing of what it loaded when it ends (``gc.freeze``), and a
command that reads, prints and ends (``short_lived``) runs without it.
"""

from __future__ import annotations

import gc
import os
import sys
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any, NoReturn

import click

from ugro.errors import UgroError

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from ugro.client import Client
    from ugro.settings import Settings


@cache
def out() -> Console:
    """The console of what a command prints for people on stdout."""
    from rich.console import Console

    # Piped to another program, a table keeps its natural width: nothing is cut.
    return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 250)


@cache
def err() -> Console:
    """The console of errors, warnings and progress, on stderr."""
    from rich.console import Console

    # Piped or logged, a message stays on one line, so a command it suggests (`chmod
    # 600 <path>`) can be copied whole; on a terminal it wraps between words.
    return Console(stderr=True, highlight=False, soft_wrap=not sys.stderr.isatty())


def fail(message: str, code: int) -> NoReturn:
    err().print(f"[bold red]error:[/] {message}", markup=True)
    sys.exit(code)


def _is_validation_error(exc: Exception) -> bool:
    """Whether ``exc`` is pydantic's ValidationError, without importing pydantic: a
    process that has not imported it cannot have raised one."""
    core = sys.modules.get("pydantic_core")
    return core is not None and isinstance(exc, core.ValidationError)


class UgroGroup(click.Group):
    """Maps ugro's errors to one line on stderr and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        collecting = gc.isenabled()
        try:
            return super().invoke(ctx)
        except UgroError as exc:
            fail(str(exc), exc.exit_code)
        except TimeoutError as exc:
            fail(str(exc), 124)
        except Exception as exc:
            if _is_validation_error(exc):
                fail(str(exc), 2)
            raise
        finally:
            # The process ends now: the collections at exit need not look at what the
            # command loaded. (Cycles left unreachable then go with the process,
            # unfinalized: the commands close what they open.) A caller that runs
            # the command in its own process gets its collector back as it was.
            gc.freeze()
            if collecting:
                gc.enable()


def short_lived() -> None:
    """Run the rest of this command without the cyclic garbage collector: for one
    that reads, prints and ends (`ugro list`, `ugro status`), whose few cycles are
    freed with the process. Never for a command that follows, waits or serves."""
    gc.disable()


def settings_from_env() -> Settings:
    from pydantic import ValidationError

    from ugro.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        bad = "; ".join(
            f"UGRO_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        fail(f"invalid setting: {bad}", 2)


def client_from_env(connect: bool = True) -> Client:
    """The client of the environment's settings; without ``connect``, Redis is
    reached only when a call needs it (read-only commands work while it is down)."""
    from ugro.client import Client

    return Client(settings_from_env(), connect=connect)


# Shell completion ------------------------------------------------------------------
# click completes commands and options itself (`_UGRO_COMPLETE=bash_source ugro`);
# these complete the values people copy around. A completion runs at every Tab: it
# reads a bounded number of recent rows, and offers nothing, silently, when the
# stack or the registry cannot be read (a traceback in the shell's line helps no one).

#: Job and array ids a completion looks through, newest first.
_COMPLETION_IDS = 200


def complete_job_ids(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Shell completion of a JOB argument: recent job and array ids that start with
    what was typed."""
    from click.shell_completion import CompletionItem

    try:
        ids = _recent_ids()
    except Exception:  # anything: completion must never print a traceback
        return []
    return [CompletionItem(i) for i in ids if i.startswith(incomplete)]


def complete_nodes(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Shell completion of ``--node``: the nodes whose workers or agents report."""
    from click.shell_completion import CompletionItem

    try:
        nodes = _reporting_nodes()
    except Exception:  # anything: completion must never print a traceback
        return []
    return [CompletionItem(node) for node in sorted(nodes) if node.startswith(incomplete)]


def _recent_ids() -> list[str]:
    from ugro.client import Client
    from ugro.registry.holds import list_arrays
    from ugro.settings import Settings

    settings = Settings()
    url = settings.effective_database_url
    if url.startswith("sqlite:///") and not os.path.exists(url.removeprefix("sqlite:///")):
        return []  # nothing ever ran here: make no registry for a Tab
    with Client(settings, connect=False) as client:
        registry = client.rt.registry
        jobs = [row.id for row in registry.list_jobs(limit=_COMPLETION_IDS)]
        arrays = [row.id for row in list_arrays(registry, _COMPLETION_IDS)]
    return list(dict.fromkeys([*arrays, *jobs]))


def _reporting_nodes() -> set[str]:
    from ugro.live.connection import connect
    from ugro.live.keys import Keys
    from ugro.settings import Settings

    settings = Settings()
    redis = connect(settings, timeout=0.5)
    try:
        keys = Keys(settings.redis_prefix)
        workers = {str(field).rsplit(":", 1)[0] for field in redis.hkeys(keys.workers)}
        return workers | {str(node) for node in redis.hkeys(keys.health_nodes)}
    finally:
        redis.close()


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


def new_table(*columns: str) -> Table:
    """A table for people, with these column headings and no box."""
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in columns:
        table.add_column(column)
    return table


def progress_bar() -> Progress:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err(),
        transient=True,
    )
