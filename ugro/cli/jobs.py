"""`ugro` commands about jobs: submit, list, status, logs (wait, cancel, retry:
``ugro.cli.control``)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ugro.cli.base import (
    STATUS_STYLE,
    age,
    client_from_env,
    complete_job_ids,
    complete_nodes,
    fail,
    main,
    short_lived,
)
from ugro.cli.plain import Cell, TextTable, escaped, shows_style, styled
from ugro.cli.progress import progress_cells
from ugro.cli.workflows import array_cells, array_json, show_array


# Options end at the command's first word, so the command's own options
# (`python train.py --lr 3e-4`) need no `--`; an unknown option before it is an
# error, never a part of the command.
@main.command(context_settings={"allow_interspersed_args": False})
@click.option("--name", required=True, help="A short name: letters, digits, '.', '_', '-'.")
@click.option("--kind", default="train", show_default=True, help="train or eval.")
@click.option("--gpus", default="1", show_default=True, help="GPUs on each node.")
@click.option(
    "--nodes", default="1", show_default=True, help="Distinct nodes, all at once (a gang job)."
)
@click.option(
    "--launch",
    default="node",
    show_default=True,
    help="node: one process a node (torchrun); gpu: one a GPU, with RANK set.",
)
@click.option("--node", default=None, help="Run only on this node.", shell_complete=complete_nodes)
@click.option("--priority", default="0", show_default=True, help="Higher starts first.")
@click.option("--max-retries", default="0", show_default=True, help="Retries after a failure.")
@click.option(
    "--retry-on",
    "retry_on",
    multiple=True,
    help="Also retry this kind of failure (oom, disk_full); repeatable.",
)
@click.option("--timeout", default=None, help="Stop after this long: 90s, 15m, 2h, 1d.")
@click.option("--epochs", default=None, help="Epochs planned (for progress).")
@click.option(
    "--epoch-file",
    "epoch_files",
    multiple=True,
    help="A file each epoch_<n>/ holds when done (default: the usual three).",
)
@click.option("--env", "env", multiple=True, help="KEY=VALUE for the job; repeatable.")
@click.option("--tag", "tags", multiple=True, help="A label; repeatable.")
@click.option("--group", default=None, help="The group or project the job counts for.")
@click.option(
    "--workdir",
    default=None,
    type=click.Path(exists=True, file_okay=False),
    help="Run in this directory (default: here).",
)
@click.option("--shell", is_flag=True, help="Run the command through /bin/sh -c.")
@click.option(
    "--after", "after", multiple=True, help="Start once these jobs or arrays finished OK: ID[,ID]."
)
@click.option("--after-any", "after_any", multiple=True, help="Start once these ended: ID[,ID].")
@click.option(
    "--after-failed", "after_failed", multiple=True, help="Start only if one of these failed."
)
@click.option("--array", "array", default=None, help="Tasks 0-99, 1,3,5 or 0-15:4: {index}.")
@click.option("--max-running", "max_running", default=None, help="An array's tasks at once.")
@click.option("--notify", "notify_ended", is_flag=True, help="Tell its end to UGRO_NOTIFY_URLS.")
@click.option("--notify-failed", "notify_failed", is_flag=True, help="Tell its failure only.")
@click.option(
    "--on-idle",
    "on_idle",
    default=None,
    help="warn, or stop: a GPU it holds idle for UGRO_IDLE_GPU_AFTER stops it.",
)
@click.option(
    "--preemptible",
    is_flag=True,
    default=None,
    help="A short job kept waiting may stop it; it is queued again to resume.",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def submit(
    retry_on: tuple[str, ...],
    epoch_files: tuple[str, ...],
    command: tuple[str, ...],
    env: tuple[str, ...],
    tags: tuple[str, ...],
    workdir: str | None,
    after: tuple[str, ...],
    after_any: tuple[str, ...],
    after_failed: tuple[str, ...],
    array: str | None,
    max_running: str | None,
    notify_ended: bool,
    notify_failed: bool,
    **options: Any,
) -> None:
    """Queue a job and print its id: ugro submit --name N -- python train.py

    With --array, queue one task a index and print the array's id: its argv's
    {index} is the task's index."""
    from pathlib import Path

    from ugro.jobs.spec import parse_spec

    pairs = {}
    for item in env:
        key, sep, value = item.partition("=")
        if not sep:
            fail(f"env: {item!r} is not KEY=VALUE", 2)
        pairs[key] = value
    data = {k: v for k, v in options.items() if v is not None}
    data.update(command=list(command), env=pairs, tags=list(tags), retry_on=list(retry_on))
    if epoch_files:
        data["epoch_files"] = list(epoch_files)
    if workdir is not None:
        data["working_dir"] = str(Path(workdir).absolute())
    for key, given in (("after", after), ("after_any", after_any), ("after_failed", after_failed)):
        data[key] = [job for item in given for job in item.split(",") if job]
    if notify_ended or notify_failed:
        data["notify"] = "ended" if notify_ended else "failed"
    spec = parse_spec(data)
    if array is None:
        if max_running is not None:
            fail("--max-running: only with --array", 2)
        with client_from_env() as client:
            click.echo(client.submit(spec).id)
        return
    from ugro.jobs.sweep import parse_array_range

    cap = _positive(max_running, "--max-running") if max_running is not None else None
    indices = parse_array_range(array)
    with client_from_env() as client:
        click.echo(client.submit_array(spec, indices, cap).id)


def _positive(value: str, option: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        fail(f"{option}: {value!r} is not a whole number of at least 1", 2)
    return number


@main.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--status", "statuses", multiple=True, help="Only jobs in this status.")
@click.option("--limit", default=50, show_default=True, help="At most this many, newest first.")
@click.option("--expand", is_flag=True, help="Each task of an array on a line of its own.")
@click.option("--user", default=None, help="Only this user's jobs.")
@click.option("--mine", is_flag=True, help="Only my jobs (UGRO_USER, else the OS user).")
@click.option("--group", default=None, help="Only this group's jobs.")
@click.option(
    "--tag", "tags", multiple=True, help="Only jobs with this tag; repeatable: all of them."
)
def list_jobs(
    as_json: bool,
    statuses: tuple[str, ...],
    limit: int,
    expand: bool,
    user: str | None,
    mine: bool,
    group: str | None,
    tags: tuple[str, ...],
) -> None:
    """List jobs, newest first, an array on one line (works while the stack is down)."""
    short_lived()
    from ugro.jobs.lifecycle import JobStatus
    from ugro.progress.scan import OUTDATED, STUCK

    findings = {STUCK, OUTDATED}  # the progress scan's, not stored statuses
    known = [s.value for s in JobStatus] + sorted(findings)
    unknown = [s for s in statuses if s not in known]
    if unknown:
        fail(f"--status: {unknown[0]!r} is not a status; use one of {', '.join(known)}", 2)
    stored = [JobStatus(s) for s in statuses if s not in findings]
    scanned = {s for s in statuses if s in findings}
    # Outdated jobs are finished ones, and the oldest: a newest-first limit on the
    # query would never reach them, so it applies once they are found.
    if OUTDATED in scanned and STUCK not in scanned:
        wanted: list[JobStatus] | None = [*stored, JobStatus.FINISHED]
    else:
        wanted = None if scanned else stored or None
    with client_from_env(connect=False) as client:
        if mine:
            user = client.user
        outdated_after = client.settings.outdated_after
        jobs = client.list(
            status=wanted,
            limit=None if OUTDATED in scanned else limit,
            tasks=expand or user is not None or group is not None or bool(tags),
            user=user,
            group=group,
            tags=tags,
        )
        arrays = [] if expand or user or group or tags else client.arrays(limit)
    shown = {job.id: job.shown_status(outdated_after) for job in jobs}
    if scanned:
        jobs = [j for j in jobs if shown[j.id] in scanned or j.status.value in statuses]
        jobs = jobs[:limit]
    if statuses:
        arrays = [a for a in arrays if a.status.value in statuses]
    if as_json:
        listed = [{**job.to_json(), "shown_status": shown[job.id]} for job in jobs]
        listed += [array_json(a) for a in arrays]
        click.echo(json.dumps(listed, indent=2, default=str))
        return
    # Ids are copied into other commands: never cut; a narrow terminal cuts names.
    columns = ("ID", "NAME", "STATUS", "NODE", "GPUS", "PROGRESS", "EPOCHS", "BEST", "ETA", "AGE")
    rows: list[Any] = sorted([*jobs, *arrays], key=lambda j: j.created_at, reverse=True)
    rows = rows[:limit]
    # A TAGS column (third) when a job shown has tags; when none has, the table as it was.
    tagged = any(getattr(row, "tags", None) for row in rows)
    table = TextTable(*columns[:2], *(["TAGS"] if tagged else []), *columns[2:], fit="NAME")
    for job in rows:
        if hasattr(job, "tasks"):  # an array
            cells: list[Cell] = list(array_cells(job))
        else:
            cells = [
                job.id,
                " ".join([job.name, *(f"{k}={v}" for k, v in job.params.items())]),
                (shown[job.id], STATUS_STYLE.get(shown[job.id], "")),
                "+".join(job.nodes) or job.node or "-",
                _gpus_cell(job),
                *progress_cells(job.progress),
                age(job.created_at),
            ]
        if tagged:
            cells.insert(2, ",".join(getattr(job, "tags", [])) or "-")
        table.add_row(*cells)
    table.print()


def _gpus_cell(job: Any) -> str:
    """The GPUS cell of `ugro list`: a one-node job's GPU indices, a gang job's nodes
    x GPUs on each (``2x2``); in brackets, what a job not placed yet wants."""
    if job.is_gang:
        shape = f"{job.num_nodes}x{job.gpus}"
        return shape if job.nodes else f"({shape})"
    return ",".join(map(str, job.gpu_indices)) or f"({job.gpus})"


@main.command()
@click.argument("job_id", shell_complete=complete_job_ids)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def status(job_id: str, as_json: bool) -> None:
    """Show one job: status, progress, why it waits, its paths."""
    short_lived()
    from ugro.errors import NotRunningError

    with client_from_env(connect=False) as client:
        if client.is_array(job_id):
            show_array(client.get_array(job_id), as_json)
            return
        job = client.get(job_id)
        shown = job.shown_status(client.settings.outdated_after)
        members = client.members(job.id) if job.is_gang else []
        paths = client.rt.paths(job.id)
        try:
            waiting = client.why_waiting(job.id)
        except NotRunningError:  # only a queued job's reason is read from Redis
            waiting = LIVE_UNAVAILABLE
    data = job.to_json()
    data["shown_status"] = shown
    data["waiting"] = waiting
    if job.is_gang:
        data["members"] = [_member_json(member) for member in members]
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
    color = shows_style(sys.stdout)
    lines = [*_status_lines(job, shown, waiting, members), *data["paths"].items()]
    for key, value in lines:
        if value is None or value == "":
            continue
        text, style = value if isinstance(value, tuple) else (value, "")
        cell = styled(escaped(text), style, color)
        click.echo(f"{styled(f'{key:<12}', 'bold', color)} {cell}")


#: What a live field says while Redis cannot be reached (the stack is down).
LIVE_UNAVAILABLE = "unavailable: the stack is not running (`ugro up`)"


def _status_lines(
    job: Any, shown: str, waiting: str | None, members: list[Any]
) -> list[tuple[str, Cell | None]]:
    """The human view of one job, a (label, value) pair a line (a value of several
    lines: the label on its first, an empty one on the others); ``shown``: its
    status as people see it (``Job.shown_status``)."""
    info = job.progress
    progress, epochs, best, eta = progress_cells(info)
    if info is not None and info.score_name and info.best_score is not None:
        best = f"{best} ({info.score_name})"
    latest = None
    if info is not None and info.latest_score is not None:
        latest = f"{info.latest_score:.4g}"
    gpus = ",".join(map(str, job.gpu_indices)) or f"({job.gpus} wanted)"
    where: list[tuple[str, Cell | None]] = [("node", job.node)]
    if job.is_gang:
        gpus = f"{job.gpus} on each of {job.num_nodes} nodes"
        where = _gang_lines(job, members)
    ended = None
    if job.finished_at is not None and job.status.value != "queued":
        ended = f"{job.exit_reason or '-'}"
        if job.exit_code is not None:
            ended += f", exit code {job.exit_code}"
        if job.exit_signal is not None:
            ended += f", signal {job.exit_signal}"
    return [
        ("id", job.id),
        ("name", job.name),
        ("kind", job.kind),
        ("status", (shown, STATUS_STYLE.get(shown, ""))),
        ("waiting", waiting),
        *where,
        ("gpus", gpus),
        ("attempt", str(job.attempt) if job.attempt else None),
        ("progress", progress if info is not None else None),
        ("epochs", epochs if info is not None else None),
        ("best", best if info is not None else None),
        ("latest", latest),
        ("eta", eta if info is not None and job.status.value == "running" else None),
        ("created", _when(job.created_at)),
        ("started", _when(job.started_at)),
        ("finished", _when(job.finished_at)),
        ("ended", ended),
        ("error", job.error),
    ]


#: How each state of a gang job's member is shown (any other end: red).
_MEMBER_STYLE = {"waiting": "yellow", "running": "cyan", "ok": "green", "stopped": "magenta"}


def _gang_lines(job: Any, members: list[Any]) -> list[tuple[str, Cell | None]]:
    """A gang job's ``nodes`` lines: each member of its latest attempt in rank order,
    ``host1 rank 0 (198.18.0.11) GPUs 0,1 running``; before any member claimed its
    part, the nodes it was placed on (or how many it wants)."""
    if not members:
        return [("nodes", ", ".join(job.nodes) or f"({job.num_nodes} wanted)")]
    lines: list[tuple[str, Cell | None]] = []
    for member in members:
        state = _member_state(member)
        gpus = ",".join(map(str, json.loads(member.gpu_indices)))
        text = f"{member.node} rank {member.rank} ({member.address}) GPUs {gpus} {state}"
        lines.append(("" if lines else "nodes", (text, _MEMBER_STYLE.get(state, "red"))))
    return lines


def _member_state(member: Any) -> str:
    """waiting (claimed, its process not started), running, or how it ended."""
    if member.ended_at is not None:
        return str(member.exit_reason or "ended")
    return "running" if member.started_at is not None else "waiting"


def _member_json(member: Any) -> dict[str, Any]:
    """One member of a gang job's latest attempt, for `ugro status --json`."""
    return {
        "rank": member.rank,
        "node": member.node,
        "address": member.address,
        "host": member.host,
        "gpu_indices": json.loads(member.gpu_indices),
        "state": _member_state(member),
        "pid": member.pid,
        "claimed_at": _iso(member.claimed_at),
        "started_at": _iso(member.started_at),
        "ended_at": _iso(member.ended_at),
        "exit_code": member.exit_code,
        "exit_signal": member.exit_signal,
        "exit_reason": member.exit_reason,
        "error": member.error,
    }


def _iso(at: Any) -> str | None:
    return None if at is None else at.isoformat()


def _when(at: Any) -> str | None:
    """A time with how long ago it was: ``2026-12-05 18:40:02 UTC (3m ago)``."""
    if at is None:
        return None
    return f"{at:%Y-%m-%d %H:%M:%S %Z} ({age(at)} ago)".replace("  ", " ")


@main.command()
@click.argument("job_id", shell_complete=complete_job_ids)
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the job ends.")
@click.option("--attempt", type=int, default=None, help="That attempt's log (default: newest).")
@click.option("--rank", type=int, default=None, help="That rank's log (gang or per-GPU jobs).")
@click.option(
    "--node",
    default=None,
    help="The log of the first rank run on that node.",
    shell_complete=complete_nodes,
)
def logs(
    job_id: str, follow: bool, attempt: int | None, rank: int | None, node: str | None
) -> None:
    """Print a job's training log, or one rank's (works while the stack is down)."""
    if not follow:
        short_lived()
    with client_from_env(connect=False) as client:
        chunks = client.logs(job_id, follow=follow, attempt=attempt, rank=rank, node=node)
        for chunk in chunks:
            sys.stdout.write(chunk)
            sys.stdout.flush()
