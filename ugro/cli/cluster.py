"""`ugro` commands about the cluster: nodes, reconcile, up, down, worker, beat, demo."""

from __future__ import annotations

import json
import sys

import click
from rich.table import Table

from ugro.cli.base import client_from_env, err, fail, main, out, progress_bar, settings_from_env


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def nodes(as_json: bool) -> None:
    """Show each node's GPUs: free, busy with a job, or blocked by another program."""
    with client_from_env() as client:
        found = client.nodes()
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    if not found:
        err.print("no GPU worker is up: start them with `ugro up` or `ugro worker`")
        return
    table = Table(box=None, header_style="bold")
    for column in ("NODE", "GPU", "STATE", "JOB / WHY", "UTIL", "MEMORY", "TEMP"):
        table.add_column(column)
    for node in found:
        for gpu in node["gpus"]:
            reading = gpu["reading"] or {}
            style = {"free": "green", "busy": "cyan", "blocked": "red"}[gpu["state"]]
            memory = reading.get("memory_used_mb")
            total = reading.get("memory_total_mb")
            table.add_row(
                node["node"],
                str(gpu["index"]),
                f"[{style}]{gpu['state']}[/]",
                gpu["job"] or gpu["blocked"] or "-",
                f"{reading.get('utilization', 0):.0f}%" if reading else "-",
                f"{memory:.0f}/{total:.0f} MiB" if memory is not None and total else "-",
                f"{reading['temperature_c']:.0f} C" if reading.get("temperature_c") else "-",
            )
    out.print(table)


@main.command(name="reconcile")
def reconcile_command() -> None:
    """Rebuild live state from the registry now (after a Redis wipe, say)."""
    from ugro.reconcile import reconcile

    with client_from_env() as client:
        report = reconcile(client.rt)
    err.print(", ".join(f"{what}: {n}" for what, n in report.items()) or "nothing to do")


def _parse_gpus(value: str | None) -> list[int] | None:
    if value is None or value == "all":
        return None
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        fail(f"--gpus: {value!r} is not a list of GPU indices like 0,1", 2)


@main.command()
@click.option("--gpus", default=None, help="GPU indices to serve, e.g. 0,1 (default: all).")
@click.option("--no-beat", is_flag=True, help="Do not start beat (another node runs it).")
def up(gpus: str | None, no_beat: bool) -> None:
    """Start Redis (embedded), this node's GPU workers, its agent and beat, in the background."""
    from ugro.stack import Stack

    settings = settings_from_env()
    stack = Stack(settings)
    with progress_bar() as progress:
        task = progress.add_task("starting", total=None)

        def show(what: str, done: int, total: int) -> None:
            progress.update(task, description=what, completed=done, total=total)

        found = stack.up(_parse_gpus(gpus), with_beat=not no_beat, on_progress=show)
    err.print(f"ugro is up on node {settings.node_name}: {found}")
    err.print(f"data: {settings.data_dir}   logs: {settings.run_dir}/*.log")


@main.command()
def down() -> None:
    """Stop everything `ugro up` started; running jobs go back to the queue."""
    from ugro.stack import Stack

    stopped = Stack(settings_from_env()).down()
    err.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@main.command()
@click.option("--gpus", default=None, help="GPU indices to serve, e.g. 0,1 (default: all).")
def worker(gpus: str | None) -> None:
    """Run this node's GPU workers and node agent in the foreground."""
    from ugro.stack import node_services, run_foreground, select_gpus

    settings = settings_from_env()
    indices, found = select_gpus(settings, _parse_gpus(gpus))
    err.print(f"node {settings.node_name}: {found}; serving GPUs {indices}")
    sys.exit(run_foreground(settings, node_services(indices)))


@main.command()
def beat() -> None:
    """Run Celery beat with ugro's schedule in the foreground."""
    from workers.beat import main as beat_main

    beat_main()


@main.command()
@click.option("--data-dir", default=None, help="Where to keep the demo's results.")
@click.option("--gpus", default=4, show_default=True, help="Simulated GPUs.")
def demo(data_dir: str | None, gpus: int) -> None:
    """Start a private stack on simulated GPUs, run a sweep, show the results."""
    from ugro.demo import run_demo

    sys.exit(run_demo(data_dir, gpus))
