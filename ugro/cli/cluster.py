"""`ugro` commands about the cluster: nodes, reconcile, up, down, worker, beat."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import click

from ugro.cli.base import (
    client_from_env,
    err,
    fail,
    main,
    new_table,
    out,
    progress_bar,
    settings_from_env,
    span,
)

if TYPE_CHECKING:
    from rich.table import Table


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--gpus", "per_gpu", is_flag=True, help="One row per GPU instead of per node.")
@click.option(
    "--history",
    "history",
    default=None,
    metavar="DURATION",
    help="The health samples of the last DURATION (e.g. 1h, 30m), oldest first.",
)
@click.option("--node", default=None, help="With --history: this node only.")
def nodes(as_json: bool, per_gpu: bool, history: str | None, node: str | None) -> None:
    """Each node's breaker and score (last check), and its GPUs, CPU, memory and
    disk as its agent last read them."""
    if history is not None:
        _history(history, node, as_json)
        return
    from ugro.health.readings import latest_readings, node_as_read

    with client_from_env() as client:
        listed = client.nodes()
        readings = latest_readings(client.rt, [entry["node"] for entry in listed])
    found = [node_as_read(entry, readings.get(entry["node"])) for entry in listed]
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    if not found:
        err().print("no node reports yet: start the workers with `ugro up` or `ugro worker`")
        return
    out().print(_gpu_table(found) if per_gpu else _node_table(found))
    if per_gpu:
        for line in _idle_warnings(found):
            out().print(f"[yellow]WARNING[/] {line}")
    for entry in found:
        health = entry["health"] or {}
        if health.get("reasons"):
            out().print(f"{entry['node']}: " + "; ".join(health["reasons"]))


def _row_gpus(entry: dict[str, Any]) -> list[tuple[bool, dict[str, Any]]]:
    """Each GPU a node's row sums, as (busy, numbers): the GPUs its GPU rows show
    (``node_as_read``), else every GPU its agent read, else what the last sweep's
    probe read."""
    if entry["gpus"]:
        return [(gpu["state"] == "busy", gpu["reading"] or {}) for gpu in entry["gpus"]]
    if entry["reading"]:
        return [(gpu.get("job") is not None, gpu) for gpu in entry["reading"]["gpus"]]
    health = entry["health"] or {}
    return [(bool(gpu.get("busy")), gpu) for gpu in health.get("gpus", [])]


_LEVEL_STYLE = {"INFO": "green", "WARNING": "yellow", "CRITICAL": "red"}
_BREAKER_STYLE = {"closed": "green", "half_open": "yellow", "open": "red"}


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def _node_table(found: list[dict[str, Any]]) -> Table:
    table = new_table(
        "NODE",
        "BREAKER",
        "SCORE",
        "GPUS",
        "UTIL",
        "GPU MEM",
        "TEMP",
        "CPU",
        "MEM",
        "DISK",
        "CHECKED",
    )
    now = datetime.now(UTC)
    for entry in found:
        health = entry["health"] or {}
        system = entry["reading"] or health  # the same reading as the GPUs' numbers
        gpus = _row_gpus(entry)
        readings = [numbers for _, numbers in gpus if numbers]
        busy = sum(1 for held, _ in gpus if held)
        total = len(gpus)
        utils = [g["utilization"] for g in readings if g.get("utilization") is not None]
        used = sum(g.get("memory_used_mb") or 0 for g in readings)
        size = sum(g.get("memory_total_mb") or 0 for g in readings)
        temps = [g["temperature_c"] for g in readings if g.get("temperature_c") is not None]
        level = health.get("level")
        checked = "-"
        if health.get("at"):
            ago = (now - datetime.fromisoformat(health["at"])).total_seconds()
            checked = f"{ago:.0f}s ago"
        table.add_row(
            entry["node"],
            _breaker_cell(entry, now) if health else "-",
            f"[{_LEVEL_STYLE[level]}]{health['score']} {level}[/]" if level else "-",
            f"{busy}/{total}",
            f"{sum(utils) / len(utils):.0f}%" if utils else "-",
            f"{used / 1024:.1f}/{size / 1024:.0f} GiB" if size else "-",
            f"{max(temps):.0f} C" if temps else "-",
            _percent(system.get("cpu_percent")),
            _percent(system.get("memory_percent")),
            _percent(system.get("disk_percent")),
            checked,
        )
    return table


def _breaker_cell(entry: dict[str, Any], now: datetime) -> str:
    """The breaker as it stands; an open one says how long its window has left."""
    state = entry["breaker"]
    shown = state.replace("_", "-")
    if entry.get("breaker_open_until"):
        left = (datetime.fromisoformat(entry["breaker_open_until"]) - now).total_seconds()
        shown += f", {span(max(left, 0.0))} left"
    return f"[{_BREAKER_STYLE[state]}]{shown}[/]"


def _gpu_table(found: list[dict[str, Any]]) -> Table:
    table = new_table("NODE", "GPU", "STATE", "JOB / WHY", "UTIL", "MEMORY", "TEMP")
    for node in found:
        for gpu in node["gpus"]:
            reading = gpu["reading"] or {}
            style = {"free": "green", "busy": "cyan", "blocked": "red"}[gpu["state"]]
            memory = reading.get("memory_used_mb")
            total = reading.get("memory_total_mb")
            table.add_row(
                node["node"],
                str(gpu["index"]),
                "[yellow]busy, idle[/]"
                if gpu.get("held_idle_since")
                else f"[{style}]{gpu['state']}[/]",
                # A blocked GPU says why: that is what a user must act on.
                (gpu["blocked"] if gpu["state"] == "blocked" else gpu["job"]) or "-",
                f"{reading.get('utilization', 0):.0f}%" if reading else "-",
                f"{memory:.0f}/{total:.0f} MiB" if memory is not None and total else "-",
                f"{reading['temperature_c']:.0f} C" if reading.get("temperature_c") else "-",
            )
    return table


def _idle_warnings(found: list[dict[str, Any]]) -> list[str]:
    """A line for each GPU a running job holds idle (flagged by the health sweep)."""
    lines = []
    now = datetime.now(UTC)
    for node in found:
        for gpu in node["gpus"]:
            since = gpu.get("held_idle_since")
            if since:
                minutes = (now - datetime.fromisoformat(since)).total_seconds() / 60
                lines.append(
                    f"GPU {node['node']}:{gpu['index']} held idle by job {gpu['job']}"
                    f" for {minutes:.0f} min"
                )
    return lines


def _history(duration: str, node: str | None, as_json: bool) -> None:
    from ugro.jobs.spec import parse_duration

    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        fail(f"--history: {exc}", 2)
    since = datetime.now(UTC) - timedelta(seconds=seconds)
    with client_from_env() as client:
        found = client.node_history(since, node)
    if as_json:
        click.echo(json.dumps([sample.to_dict() for sample in found], indent=2))
        return
    if not found:
        err().print(f"no health samples in the last {duration}")
        return
    table = new_table("TIME", "NODE", "BREAKER", "SCORE", "GPU UTIL", "BUSY", "CPU", "WHY")
    for sample in found:
        utils = [g.utilization for g in sample.gpus if g.utilization is not None]
        table.add_row(
            sample.at.astimezone().strftime("%H:%M:%S"),
            sample.node,
            sample.breaker.replace("_", "-"),
            f"[{_LEVEL_STYLE[sample.level]}]{sample.score} {sample.level}[/]",
            f"{sum(utils) / len(utils):.0f}%" if utils else "-",
            f"{sum(g.busy for g in sample.gpus)}/{len(sample.gpus)}",
            _percent(sample.cpu_percent),
            "; ".join(sample.reasons) or "-",
        )
    out().print(table)


@main.command(name="health")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def health_command(as_json: bool) -> None:
    """Run a health sweep now (beat runs one every 5-60 s) and show what it found."""
    with client_from_env() as client:
        report = client.sweep_health()
    if as_json:
        click.echo(json.dumps({n: s.to_dict() for n, s in report.nodes.items()}, indent=2))
        return
    for name, sample in report.nodes.items():
        why = "; ".join(sample.reasons) or "all checks pass"
        style = _LEVEL_STYLE[sample.level]
        out().print(
            f"{name}: [{style}]{sample.score} {sample.level}[/], breaker {sample.breaker}: {why}"
        )


@main.command(name="reconcile")
def reconcile_command() -> None:
    """Rebuild live state from the registry now (after a Redis wipe, say)."""
    from ugro.execution.reconcile import reconcile

    with client_from_env() as client:
        report = reconcile(client.rt)
    err().print(", ".join(f"{what}: {n}" for what, n in report.items()) or "nothing to do")


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
    from ugro.ops.stack import Stack

    settings = settings_from_env()
    stack = Stack(settings)
    with progress_bar() as progress:
        task = progress.add_task("starting", total=None)

        def show(what: str, done: int, total: int) -> None:
            progress.update(task, description=what, completed=done, total=total)

        found = stack.up(_parse_gpus(gpus), with_beat=not no_beat, on_progress=show)
    err().print(f"ugro is up on node {settings.node_name}: {found}")
    err().print(f"data: {settings.data_dir}   logs: {settings.run_dir}/*.log")


@main.command()
def down() -> None:
    """Stop everything `ugro up` started; running jobs go back to the queue."""
    from ugro.ops.stack import Stack

    stopped = Stack(settings_from_env()).down()
    err().print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@main.command()
@click.option("--gpus", default=None, help="GPU indices to serve, e.g. 0,1 (default: all).")
def worker(gpus: str | None) -> None:
    """Run this node's GPU workers and node agent in the foreground."""
    from ugro.live.connection import connect
    from ugro.ops.stack import node_services, run_foreground, select_gpus

    settings = settings_from_env()
    connect(settings).close()  # unreachable, or a wrong password: said now, exit 3
    indices, found = select_gpus(settings, _parse_gpus(gpus))
    err().print(f"node {settings.node_name}: {found}; serving GPUs {indices}")
    sys.exit(run_foreground(settings, node_services(indices)))


@main.command()
def beat() -> None:
    """Run Celery beat with ugro's schedule in the foreground."""
    from ugro.live.connection import connect
    from workers.beat import main as beat_main

    connect(settings_from_env()).close()  # unreachable, or a wrong password: exit 3
    beat_main()
