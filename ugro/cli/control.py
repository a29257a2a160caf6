"""`ugro wait`, `ugro cancel`, `ugro retry`: acting on jobs (and arrays as one)."""

from __future__ import annotations

import sys
from typing import Any

import click

from ugro.cli.base import client_from_env, complete_job_ids, err, fail, main, progress_bar


@main.command()
@click.argument("job_ids", nargs=-1, required=True, shell_complete=complete_job_ids)
@click.option("--timeout", default=None, help="Give up after this long (90s, 15m, 2h).")
def wait(job_ids: tuple[str, ...], timeout: str | None) -> None:
    """Wait for jobs to end; exit 0 when all succeeded, else the first failure's code."""
    from ugro.jobs.spec import parse_duration

    try:
        limit = None if timeout is None else parse_duration(timeout)
    except ValueError as exc:
        fail(f"--timeout: {exc}", 2)
    with client_from_env() as client, progress_bar() as progress:
        task = progress.add_task("jobs done", total=len(job_ids))

        latest: dict[str, Any] = {}

        def show(read: list[Any]) -> None:
            latest.update((job.id, job) for job in read)
            running = sum(job.status.value == "running" for job in latest.values())
            progress.update(
                task,
                total=len(latest),  # (an array's tasks each count)
                completed=sum(job.done for job in latest.values()),
                description=f"jobs done ({running} running)",
            )

        jobs = client.wait(list(job_ids), timeout=limit, on_change=show)
    for job in jobs:
        if not job.succeeded:
            err().print(
                f"{job.id}: {job.status.value} ({job.exit_reason or '-'}: {job.error or ''})"
            )
            sys.exit(job.failure_code)


@main.command()
@click.argument("job_ids", nargs=-1, required=True, shell_complete=complete_job_ids)
@click.option("--grace", default=None, help="SIGTERM -> SIGKILL grace (default: 30s).")
@click.option("--no-wait", is_flag=True, help="Return once asked; do not wait for the end.")
@click.option("--force", is_flag=True, help="Also another user's jobs.")
def cancel(job_ids: tuple[str, ...], grace: str | None, no_wait: bool, force: bool) -> None:
    """Cancel jobs: a queued job never starts, a running one is stopped."""
    from ugro.jobs.spec import parse_duration

    try:
        seconds = None if grace is None else parse_duration(grace)
    except ValueError as exc:
        fail(f"--grace: {exc}", 2)
    with client_from_env() as client:
        _check_owner(client, job_ids, force, "cancel")
        arrays = [job_id for job_id in job_ids if client.is_array(job_id)]
        jobs = [client.cancel(job_id, grace=seconds) for job_id in job_ids if job_id not in arrays]
        jobs += [job for array in arrays for job in client.cancel_array(array, grace=seconds)]
        if not no_wait:
            with progress_bar() as progress:
                progress.add_task("stopping", total=None)
                jobs = client.wait([job.id for job in jobs])
        for job in jobs:
            if job.array_id not in arrays:
                err().print(f"{job.id}: {job.status.value}")
        for array_id in arrays:
            err().print(f"{array_id}: {client.get_array(array_id).summary()}")


def _check_owner(client: Any, job_ids: tuple[str, ...], force: bool, verb: str) -> None:
    """Refuse to act on another user's job without ``--force``. Advisory: whoever
    has the cluster's credentials can do anything (the README says so)."""
    if force:
        return
    for job_id in job_ids:
        owners = (
            {task.user for task in client.get_array(job_id).tasks}
            if client.is_array(job_id)
            else {client.get(job_id).user}
        )
        others = sorted(owner for owner in owners if owner not in (None, client.user))
        if others:
            fail(f"{job_id} is {others[0]}'s: add --force to {verb} it", 2)


@main.command()
@click.argument("job_ids", nargs=-1, required=True, shell_complete=complete_job_ids)
@click.option("--force", is_flag=True, help="Also another user's jobs.")
def retry(job_ids: tuple[str, ...], force: bool) -> None:
    """Queue failed, cancelled or lost jobs again as their next attempt (an array:
    its failed tasks)."""
    with client_from_env() as client:
        _check_owner(client, job_ids, force, "retry")
        for job_id in job_ids:
            if client.is_array(job_id):
                tasks = client.retry_array(job_id)
                err().print(f"{job_id}: {len(tasks)} failed task(s) queued again")
                continue
            job = client.retry(job_id)
            err().print(f"{job.id}: {job.status.value}")
