"""The `ugro` command: a thin shell over ``ugro.Client`` and ``ugro.stack``.

Tables and progress go to people (progress on stderr), ``--json`` to scripts.
Errors print one line naming what was wrong; exit 2 for bad input, 3 when the
stack is not running, 1 for anything else.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any, NoReturn

import click
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table

from ugro.errors import UgroError
from ugro.settings import Settings

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)


def _fail(message: str, code: int) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", markup=True)
    sys.exit(code)


class UgroGroup(click.Group):
    """Maps ugro's errors to one line on stderr and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UgroError as exc:
            _fail(str(exc), exc.exit_code)
        except ValidationError as exc:
            _fail(str(exc), 2)
        except TimeoutError as exc:
            _fail(str(exc), 124)


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        bad = "; ".join(
            f"UGRO_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        _fail(f"invalid setting: {bad}", 2)


def _client() -> Any:
    from ugro.client import Client

    return Client(_settings())


def _age(when: datetime | None) -> str:
    if when is None:
        return "-"
    seconds = (datetime.now(UTC) - when).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


_STATUS_STYLE = {
    "finished": "green",
    "running": "cyan",
    "placed": "cyan",
    "queued": "yellow",
    "failed": "red",
    "lost": "red",
    "cancelled": "magenta",
}


@click.group(cls=UgroGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ugro")
def main() -> None:
    """ugro: run GPU jobs for a machine-learning lab."""


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--name", required=True, help="A short name: letters, digits, '.', '_', '-'.")
@click.option("--kind", default="train", show_default=True, help="train or eval.")
@click.option("--gpus", default="1", show_default=True, help="GPUs on one node.")
@click.option("--node", default=None, help="Run only on this node.")
@click.option("--priority", default="0", show_default=True, help="Higher starts first.")
@click.option("--max-retries", default="0", show_default=True, help="Retries after a failure.")
@click.option(
    "--retry-on",
    "retry_on",
    multiple=True,
    help="Also retry this kind of failure (oom); repeatable.",
)
@click.option("--timeout", default=None, help="Stop after this long: 90s, 15m, 2h, 1d.")
@click.option("--epochs", default=None, help="Epochs planned (for progress).")
@click.option("--env", "env", multiple=True, help="KEY=VALUE for the job; repeatable.")
@click.option("--tag", "tags", multiple=True, help="A label; repeatable.")
@click.option("--workdir", default=None, help="Run in this directory (default: here).")
@click.option("--shell", is_flag=True, help="Run the command through /bin/sh -c.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def submit(
    retry_on: tuple[str, ...],
    command: tuple[str, ...],
    env: tuple[str, ...],
    tags: tuple[str, ...],
    workdir: str | None,
    **options: Any,
) -> None:
    """Queue a job and print its id: ugro submit --name N -- python train.py"""
    from pathlib import Path

    from ugro.spec import parse_spec

    pairs = {}
    for item in env:
        key, sep, value = item.partition("=")
        if not sep:
            _fail(f"env: {item!r} is not KEY=VALUE", 2)
        pairs[key] = value
    data = {k: v for k, v in options.items() if v is not None}
    data.update(command=list(command), env=pairs, tags=list(tags), retry_on=list(retry_on))
    if workdir is not None:
        data["working_dir"] = str(Path(workdir).absolute())
    spec = parse_spec(data)
    with _client() as client:
        job = client.submit(spec)
    click.echo(job.id)


@main.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--status", "statuses", multiple=True, help="Only jobs in this status.")
@click.option("--limit", default=50, show_default=True, help="At most this many, newest first.")
def list_jobs(as_json: bool, statuses: tuple[str, ...], limit: int) -> None:
    """List jobs, newest first."""
    from ugro.status import JobStatus

    try:
        wanted = [JobStatus(s) for s in statuses] or None
    except ValueError as exc:
        _fail(f"--status: {exc}; use one of {', '.join(s.value for s in JobStatus)}", 2)
    with _client() as client:
        jobs = client.list(status=wanted, limit=limit)
    if as_json:
        click.echo(json.dumps([job.to_json() for job in jobs], indent=2))
        return
    table = Table(box=None, header_style="bold")
    for column in ("ID", "NAME", "STATUS", "NODE", "GPUS", "AGE"):
        table.add_column(column)
    for job in jobs:
        gpus = ",".join(map(str, job.gpu_indices)) or f"({job.gpus})"
        style = _STATUS_STYLE.get(job.status.value, "")
        table.add_row(
            job.id,
            job.name,
            f"[{style}]{job.status.value}[/]",
            job.node or "-",
            gpus,
            _age(job.created_at),
        )
    out.print(table)


@main.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def status(job_id: str, as_json: bool) -> None:
    """Show one job, with its paths."""
    with _client() as client:
        job = client.get(job_id)
        paths = client.rt.paths(job.id)
        waiting = client.why_waiting(job.id)
    data = job.to_json()
    data["waiting"] = waiting
    data["paths"] = {
        "job_dir": str(paths.root),
        "config": str(paths.config),
        "metadata": str(paths.metadata),
        "metrics": str(paths.metrics),
        "console": str(paths.console),
        "training_log": str(paths.training_log),
        "checkpoints": str(paths.checkpoints),
        "tensorboard": str(paths.tensorboard),
    }
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for key in (
        "id",
        "name",
        "kind",
        "status",
        "waiting",
        "node",
        "gpu_indices",
        "attempt",
        "created_at",
        "started_at",
        "finished_at",
        "exit_code",
        "exit_reason",
        "error",
    ):
        value = data[key]
        if value not in (None, [], ""):
            out.print(f"[bold]{key:<12}[/] {value}")
    for key, value in data["paths"].items():
        out.print(f"[bold]{key:<12}[/] {value}")


@main.command()
@click.argument("job_id")
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the job ends.")
@click.option("--attempt", type=int, default=None, help="That attempt's log (default: newest).")
def logs(job_id: str, follow: bool, attempt: int | None) -> None:
    """Print a job's training log."""
    with _client() as client:
        for chunk in client.logs(job_id, follow=follow, attempt=attempt):
            sys.stdout.write(chunk)
            sys.stdout.flush()


@main.command()
@click.argument("job_ids", nargs=-1, required=True)
@click.option("--timeout", default=None, help="Give up after this long (90s, 15m, 2h).")
def wait(job_ids: tuple[str, ...], timeout: str | None) -> None:
    """Wait for jobs to end; exit 0 when all succeeded, else the first failure's code."""
    from ugro.spec import parse_duration

    try:
        limit = None if timeout is None else parse_duration(timeout)
    except ValueError as exc:
        _fail(f"--timeout: {exc}", 2)
    with _client() as client, _progress() as progress:
        task = progress.add_task("jobs done", total=len(job_ids))

        def show(jobs: list[Any]) -> None:
            running = sum(job.status.value == "running" for job in jobs)
            progress.update(
                task,
                completed=sum(job.done for job in jobs),
                description=f"jobs done ({running} running)",
            )

        jobs = client.wait(list(job_ids), timeout=limit, on_change=show)
    for job in jobs:
        if not job.succeeded:
            err.print(f"{job.id}: {job.status.value} ({job.exit_reason or '-'}: {job.error or ''})")
            sys.exit(job.failure_code)


@main.command()
@click.argument("job_ids", nargs=-1, required=True)
@click.option("--grace", default=None, help="SIGTERM -> SIGKILL grace (default: 30s).")
@click.option("--no-wait", is_flag=True, help="Return once asked; do not wait for the end.")
def cancel(job_ids: tuple[str, ...], grace: str | None, no_wait: bool) -> None:
    """Cancel jobs: a queued job never starts, a running one is stopped."""
    from ugro.spec import parse_duration

    try:
        seconds = None if grace is None else parse_duration(grace)
    except ValueError as exc:
        _fail(f"--grace: {exc}", 2)
    with _client() as client:
        jobs = [client.cancel(job_id, grace=seconds) for job_id in job_ids]
        if not no_wait:
            with _progress() as progress:
                progress.add_task("stopping", total=None)
                jobs = client.wait([job.id for job in jobs])
    for job in jobs:
        err.print(f"{job.id}: {job.status.value}")


@main.command()
@click.argument("job_ids", nargs=-1, required=True)
def retry(job_ids: tuple[str, ...]) -> None:
    """Queue failed, cancelled or lost jobs again as their next attempt."""
    with _client() as client:
        for job_id in job_ids:
            job = client.retry(job_id)
            err.print(f"{job.id}: {job.status.value}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def nodes(as_json: bool) -> None:
    """Show each node's GPUs: free, busy with a job, or blocked by another program."""
    with _client() as client:
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

    with _client() as client:
        report = reconcile(client.rt)
    err.print(", ".join(f"{what}: {n}" for what, n in report.items()) or "nothing to do")


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err,
        transient=True,
    )


def _parse_gpus(value: str | None) -> list[int] | None:
    if value is None or value == "all":
        return None
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        _fail(f"--gpus: {value!r} is not a list of GPU indices like 0,1", 2)


@main.command()
@click.option("--gpus", default=None, help="GPU indices to serve, e.g. 0,1 (default: all).")
@click.option("--no-beat", is_flag=True, help="Do not start beat (another node runs it).")
def up(gpus: str | None, no_beat: bool) -> None:
    """Start Redis (embedded), this node's GPU workers, its agent and beat, in the background."""
    from ugro.stack import Stack

    settings = _settings()
    stack = Stack(settings)
    with _progress() as progress:
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

    stopped = Stack(_settings()).down()
    err.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@main.command()
@click.option("--gpus", default=None, help="GPU indices to serve, e.g. 0,1 (default: all).")
def worker(gpus: str | None) -> None:
    """Run this node's GPU workers and node agent in the foreground."""
    from ugro.stack import node_services, run_foreground, select_gpus

    settings = _settings()
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
