"""`ugro top`: the jobs and the GPU grid, redrawn in place every second.

`ugro list` and `ugro nodes --gpus` print once; this is their watch view. Rich's
``Live`` redraws the frame over the last one (no clearing of the screen, so no
flicker); piped, only the last frame is printed.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from ugro.cli.base import STATUS_STYLE, age, client_from_env, main, new_table, out

if TYPE_CHECKING:
    from rich.console import RenderableType

    from ugro.client import Client
    from ugro.job import Job

_GPU_STYLE = {"free": "green", "busy": "cyan", "blocked": "red"}


@main.command()
@click.option("--interval", default=1.0, show_default=True, help="Seconds between frames.")
@click.option("--limit", default=20, show_default=True, help="At most this many jobs shown.")
@click.option(
    "--iterations",
    type=click.IntRange(min=1),
    default=None,
    help="Draw this many frames, then exit (default: until Ctrl-C).",
)
def top(interval: float, limit: int, iterations: int | None) -> None:
    """Watch the jobs (running and queued first, then the latest ended) and each
    node's GPUs, redrawn every --interval seconds until Ctrl-C."""
    from rich.live import Live

    pause = threading.Event()  # (never set: its wait is a sleep Ctrl-C ends)
    with client_from_env() as client:
        try:
            with Live(frame(client, limit), console=out(), auto_refresh=False) as live:
                drawn = 1
                while iterations is None or drawn < iterations:
                    pause.wait(interval)
                    live.update(frame(client, limit), refresh=True)
                    drawn += 1
        except KeyboardInterrupt:
            pass


def frame(client: Client, limit: int) -> RenderableType:
    """One frame: a heading line, the jobs table and the GPU grid."""
    from rich.console import Group
    from rich.text import Text

    from ugro.health.readings import latest_readings
    from ugro.jobs.lifecycle import JobStatus

    active = [JobStatus.RUNNING, JobStatus.PLACED, JobStatus.QUEUED]
    jobs = client.list(status=active, limit=limit)
    if len(jobs) < limit:
        ended = [job for job in client.list(limit=limit) if job.status not in active]
        jobs += ended[: limit - len(jobs)]
    # Each GPU's state and job as they are now (its lease), its numbers as its
    # node's agent last read them (every few seconds).
    nodes = client.nodes()
    readings = latest_readings(client.rt, [entry["node"] for entry in nodes])
    for entry in nodes:
        reading = readings.get(entry["node"])
        read = {int(gpu["index"]): gpu for gpu in reading.gpus} if reading else {}
        for gpu in entry["gpus"]:
            gpu["reading"] = read.get(int(gpu["index"]))
    running = sum(job.status is JobStatus.RUNNING for job in jobs)
    queued = sum(job.status is JobStatus.QUEUED for job in jobs)
    gpus = [gpu for node in nodes for gpu in node["gpus"]]
    busy = sum(gpu["state"] == "busy" for gpu in gpus)
    now = datetime.now(UTC).astimezone().strftime("%H:%M:%S")
    heading = Text.assemble(
        ("ugro top", "bold"),
        f"  {now}  {running} running, {queued} queued, {busy}/{len(gpus)} GPUs busy",
        ("  (Ctrl-C to quit)", "dim"),
    )
    return Group(heading, Text(), _jobs_table(jobs), Text(), _gpu_grid(nodes))


def _jobs_table(jobs: list[Job]) -> RenderableType:
    from rich.text import Text

    from ugro.cli.progress import progress_cells

    columns = ("ID", "NAME", "STATUS", "NODE", "GPUS", "PROGRESS", "EPOCHS", "BEST", "ETA", "AGE")
    table = new_table(*columns)
    for job in jobs:
        shown = job.run_status if job.run_status in ("stuck", "outdated") else job.status.value
        gpus = ",".join(map(str, job.gpu_indices)) or f"({job.gpus})"
        cells: list[str | Text] = [
            job.id,
            job.name,
            Text(shown, STATUS_STYLE.get(shown, "")),
            "+".join(job.nodes) or job.node or "-",
            gpus,
            *progress_cells(job.progress),
            age(job.created_at),
        ]
        table.add_row(*(cell if isinstance(cell, Text) else Text(cell) for cell in cells))
    if not jobs:
        return Text("no jobs yet: `ugro submit --name N -- python train.py`", "dim")
    return table


def _gpu_grid(nodes: list[dict[str, Any]]) -> RenderableType:
    """A row a node, a column a GPU index: each cell its state, load and job."""
    from rich.text import Text

    if not nodes:
        return Text("no node reports yet: start the workers with `ugro up`", "dim")
    width = max((int(gpu["index"]) + 1 for node in nodes for gpu in node["gpus"]), default=0)
    table = new_table("NODE", *(f"GPU {index}" for index in range(width)))
    for node in nodes:
        cells: list[Text] = [Text("-", "dim")] * width
        for gpu in node["gpus"]:
            reading = gpu["reading"] or {}
            cell = Text(gpu["state"], _GPU_STYLE.get(gpu["state"], ""))
            if reading.get("utilization") is not None:
                cell.append(f" {reading['utilization']:.0f}%")
            if reading.get("temperature_c"):
                cell.append(f" {reading['temperature_c']:.0f}C", "dim")
            who = gpu["blocked"] if gpu["state"] == "blocked" else gpu["job"]
            if who:
                cell.append(f"\n{who}")
            cells[int(gpu["index"])] = cell
        table.add_row(Text(node["node"], "bold"), *cells)
    return table
