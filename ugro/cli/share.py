"""`ugro share`: each user's share, recent usage and place in the fair share order."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from ugro.cli.base import client_from_env, main
from ugro.cli.plain import TextTable


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def share(as_json: bool) -> None:
    """Each user's share, GPU-hours used lately (decayed), jobs queued, GPUs in use,
    quotas and order: the user with the least usage per share is served first
    (each group's, when the cluster file's [sharing] says by = "group")."""
    from ugro.scheduling.fair_share import user_shares

    with client_from_env() as client:
        users = user_shares(client.rt)
    if as_json:
        click.echo(json.dumps([asdict(user) for user in users], indent=2))
        return
    who = users[0].by.upper() if users else "USER"
    table = TextTable(
        who, "SHARE", "USAGE (GPU-H)", "QUEUED", "RUNNING GPUS", "MAX GPUS", "MAX QUEUED", "ORDER"
    )
    for user in users:
        table.add_row(
            user.user or "-",
            f"{user.share:g}",
            f"{user.usage_gpu_hours:.3f}",
            str(user.queued),
            str(user.running_gpus),
            "-" if user.max_gpus is None else str(user.max_gpus),
            "-" if user.max_queued is None else str(user.max_queued),
            str(user.rank),
        )
    table.print()
