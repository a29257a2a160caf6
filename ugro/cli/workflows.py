"""`ugro sweep`, and how an array reads in `ugro list`: one line for all its tasks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ugro.cli.base import STATUS_STYLE, age, client_from_env, fail, main, short_lived
from ugro.cli.plain import Cell, TextTable

if TYPE_CHECKING:
    from ugro.arrays import JobArray
    from ugro.job import Job


def array_cells(array: JobArray) -> tuple[Cell, ...]:
    """`ugro list`'s row of an array: its status as one, its tasks' counts, how far
    they got together, and their best score."""
    status = array.status.value
    best = _best(array.tasks)
    return (
        array.id,
        f"{array.name} ({array.kind})",
        (status, STATUS_STYLE.get(status, "")),
        "-",
        f"{array.count} tasks",
        f"{array.progress * 100:.0f}%",
        array.summary(),
        "-" if best is None else f"{best[1]:.4g}",
        "-",
        age(array.created_at),
    )


def array_json(array: JobArray) -> dict[str, Any]:
    """An array for scripts: what `ugro list` shows of it, and its tasks' ids."""
    return {
        "id": array.id,
        "name": array.name,
        "kind": array.kind,
        "status": array.status.value,
        "count": array.count,
        "max_running": array.max_running,
        "counts": array.counts,
        "progress": round(array.progress, 4),
        "params": array.params,
        "created_at": array.created_at.isoformat(),
        "tasks": [task.id for task in array.tasks],
    }


def show_array(array: JobArray, as_json: bool) -> None:
    """`ugro status ARRAY`: the array as one, then each task."""
    if as_json:
        tasks = [task.to_json() for task in array.tasks]
        click.echo(json.dumps({**array_json(array), "tasks": tasks}, indent=2, default=str))
        return
    cap = f", at most {array.max_running} at once" if array.max_running else ""
    click.echo(f"{array.id}: {array.kind} of {array.count} tasks{cap}")
    click.echo(f"status: {array.status.value} ({array.summary()}), {array.progress:.0%} done")
    table = TextTable("ID", "STATUS", "NODE", "GPUS", "ATTEMPT", "REASON")
    for task in array.tasks:
        status = task.status.value
        table.add_row(
            task.id,
            (status, STATUS_STYLE.get(status, "")),
            task.node or "-",
            ",".join(map(str, task.gpu_indices)) or "-",
            str(task.attempt),
            task.exit_reason or ("waiting" if task.hold else "-"),
        )
    table.print()


def _best(tasks: list[Job]) -> tuple[Job, float] | None:
    scored = [
        (task, task.progress.best_score)
        for task in tasks
        if task.progress is not None and task.progress.best_score is not None
    ]
    return max(scored, key=lambda pair: pair[1]) if scored else None


class _SweepCommands(click.Group):
    """`ugro sweep FILE` (or `--grid`) runs a sweep, `ugro sweep status ID` reads
    one: what does not name a subcommand is the run's."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@main.group(cls=_SweepCommands)
def sweep() -> None:
    """Parameter sweeps: ugro sweep sweep.yaml; ugro sweep status SWEEP."""


# Options end at the command's first word, as for `ugro submit`.
@sweep.command(name="run", context_settings={"allow_interspersed_args": False})
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", default=None, help="The sweep's name (with --grid).")
@click.option("--grid", "grid", multiple=True, help="name=v1,v2,...; repeatable: their product.")
@click.option("--gpus", default=None, help="GPUs of each point's job (with --grid).")
@click.option("--max-running", "max_running", default=None, help="Points running at once.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def sweep_run(
    file: Path | None,
    name: str | None,
    grid: tuple[str, ...],
    gpus: str | None,
    max_running: str | None,
    command: tuple[str, ...],
) -> None:
    """Run a sweep and print its id: ugro sweep sweep.yaml, or ugro sweep --name lr
    --grid lr=1e-4,3e-4 --grid seed=0,1 -- python train.py --lr {lr} --seed {seed}"""
    from ugro.jobs.sweep import parse_grid, sweep_from_grid
    from ugro.jobs.sweep_file import load_sweep

    if file is not None and not grid:
        if command:
            fail("sweep: give a sweep file, or --grid and a command, not both", 2)
        spec = load_sweep(file)
    else:
        argv = [str(file), *command] if file is not None else list(command)
        if not grid or not argv or name is None:
            fail("sweep: give a sweep file, or --name, --grid and a command", 2)
        fields: dict[str, Any] = {}
        if gpus is not None:
            fields["gpus"] = gpus
        if max_running is not None:
            fields["max_running"] = max_running
        spec = sweep_from_grid(name, argv, parse_grid(grid), **fields)
    with client_from_env() as client:
        array, then = client.sweep(spec)
    click.echo(array.id)
    if then is not None:
        click.echo(f"then: {then.id}", err=True)


@sweep.command(name="status")
@click.argument("sweep_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def sweep_status(sweep_id: str, as_json: bool) -> None:
    """Every point of a sweep: its parameters, status, progress and best score,
    best first."""
    short_lived()
    from ugro.cli.progress import progress_cells

    with client_from_env(connect=False) as client:
        array = client.get_array(sweep_id)
    points = sorted(array.tasks, key=_rank)
    if as_json:
        listed = [
            {
                "id": task.id,
                "index": task.array_index,
                "params": _params(task),
                "status": task.status.value,
                "progress": task.progress.percent if task.progress else None,
                "best_score": task.progress.best_score if task.progress else None,
                "score_name": task.progress.score_name if task.progress else None,
            }
            for task in points
        ]
        click.echo(json.dumps({**array_json(array), "points": listed}, indent=2))
        return
    click.echo(f"{array.id}: {array.status.value}, {array.summary()}")
    columns = ("ID", *(name.upper() for name in array.params), "STATUS", "PROGRESS", "BEST")
    table = TextTable(*columns)
    for task in points:
        progress, _, best, _ = progress_cells(task.progress)
        params = _params(task)
        status = task.status.value
        table.add_row(
            task.id,
            *(str(params.get(name, "-")) for name in array.params),
            (status, STATUS_STYLE.get(status, "")),
            progress,
            best,
        )
    table.print()


def _rank(task: Job) -> tuple[int, float, int]:
    """Best score first (the trackers' best is their highest), then the points
    without one, in index order."""
    best = task.progress.best_score if task.progress is not None else None
    return (
        (0, -best, task.array_index or 0) if best is not None else (1, 0.0, task.array_index or 0)
    )


def _params(task: Job) -> dict[str, Any]:
    """A point's parameters."""
    return dict(task.params)
