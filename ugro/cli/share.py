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
    and order: the user with the least usage per share is served first."""
    from ugro.scheduling.fair_share import user_shares

    with client_from_env() as client:
        users = user_shares(client.rt)
    if as_json:
        click.echo(json.dumps([asdict(user) for user in users], indent=2))
        return
    table = TextTable("USER", "SHARE", "USAGE (GPU-H)", "QUEUED", "RUNNING GPUS", "ORDER")
    for user in users:
        table.add_row(
            user.user or "-",
            f"{user.share:g}",
            f"{user.usage_gpu_hours:.3f}",
            str(user.queued),
            str(user.running_gpus),
            str(user.rank),
        )
    table.print()
