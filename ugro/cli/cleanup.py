"""`ugro rm` and `ugro gc`: removing ended jobs for good (``ugro.cleanup``)."""

from __future__ import annotations

import json
from typing import Any

import click

from ugro.cli.base import client_from_env, complete_job_ids, err, fail, main

# (one owner rule for every verb that acts on jobs)
from ugro.cli.control import _check_owner as check_owner


@main.command(name="rm")
@click.argument("job_ids", nargs=-1, required=True, shell_complete=complete_job_ids)
@click.option("--keep-tree", is_flag=True, help="Keep the jobs' folders; remove the records.")
@click.option("--force", is_flag=True, help="Also another user's jobs.")
def rm(job_ids: tuple[str, ...], keep_tree: bool, force: bool) -> None:
    """Remove ended jobs (and whole arrays): their registry rows, Redis records and
    folders. A job not ended yet is refused, and then nothing is removed."""
    with client_from_env() as client:
        check_owner(client, job_ids, force, "remove")
        done = client.remove(list(job_ids), keep_tree=keep_tree)
    for job_id in done.jobs:
        err().print(f"{job_id}: removed")
    for array_id, tasks in done.arrays.items():
        err().print(f"{array_id}: removed with its {len(tasks)} task(s)")


@main.command()
@click.option(
    "--older-than",
    required=True,
    metavar="DURATION",
    help="Jobs that ended longer ago than this (30d, 12h).",
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(["finished", "failed", "cancelled"]),
    help="Only jobs that ended so; repeatable (default: all three).",
)
@click.option("--dry-run", is_flag=True, help="Print what would go; remove nothing.")
@click.option("--keep-tree", is_flag=True, help="Keep the jobs' folders; remove the records.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def gc(
    older_than: str, statuses: tuple[str, ...], dry_run: bool, keep_tree: bool, as_json: bool
) -> None:
    """Remove the jobs (and whole arrays) that ended longer ago than --older-than.
    Nothing queued, placed or running is touched, nor what a waiting job depends on."""
    from ugro.jobs.spec import parse_duration

    try:
        seconds = parse_duration(older_than)
    except ValueError as exc:
        fail(f"--older-than: {exc}", 2)
    with client_from_env() as client:
        done = client.gc(seconds, statuses or None, keep_tree=keep_tree, dry_run=dry_run)
    if as_json:
        found: dict[str, Any] = {"dry_run": dry_run, "jobs": done.jobs, "arrays": done.arrays}
        click.echo(json.dumps(found, indent=2))
        return
    for job_id in [*done.jobs, *done.arrays]:
        click.echo(job_id)
    verb = "would remove" if dry_run else "removed"
    arrays = f" (of them {len(done.arrays)} whole array(s))" if done.arrays else ""
    err().print(f"{verb} {done.count} job(s) ended over {older_than} ago{arrays}")
