"""`ugro` commands for operating a lab's installation (flower) and for trying
ugro out (demo)."""

from __future__ import annotations

import logging
import sys

import click

from ugro.cli.base import err, main, settings_from_env


@main.command()
@click.option("--address", default=None, help="Listen here (default: UGRO_FLOWER_ADDRESS).")
@click.option("--port", type=int, default=None, help="Listen here (default: UGRO_FLOWER_PORT).")
@click.option(
    "--allow-control",
    is_flag=True,
    help="Let Flower revoke tasks and control workers (off: ugro cancel stops jobs).",
)
def flower(address: str | None, port: int | None, allow_control: bool) -> None:
    """Run Flower on ugro's broker, in the foreground, with a login always required."""
    from ugro.logins import is_loopback
    from ugro.ops.flower import flower_login, run_flower

    settings = settings_from_env()
    changes = {"flower_address": address, "flower_port": port}
    settings = settings.model_copy(update={k: v for k, v in changes.items() if v is not None})
    login = flower_login(settings)
    if login.generated:
        err().print(
            f"Flower login (shown this once): user [bold]{login.user}[/] password"
            f" [bold]{login.password}[/]  (kept in {login.source}, mode 0600)"
        )
    if not is_loopback(settings.flower_address):
        err().print(
            f"[yellow]warning:[/] Flower listens on {settings.flower_address}: the login"
            " crosses the network in clear unless a TLS proxy stands in front"
        )
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    def ready(url: str) -> None:
        where = "UGRO_FLOWER_BASIC_AUTH" if login.source.startswith("UGRO_") else login.source
        mode = "read-write" if allow_control else "read-only"
        err().print(f"Flower ({mode}) at {url}  log in as {login.user} (password: {where})")

    run_flower(settings, login, allow_control=allow_control, on_ready=ready)


@main.command()
@click.option("--data-dir", default=None, help="Where to keep the demo's results.")
@click.option("--gpus", default=4, show_default=True, help="Simulated GPUs.")
@click.option("--keep", is_flag=True, help="Keep the temporary directory and its results tree.")
def demo(data_dir: str | None, gpus: int, keep: bool) -> None:
    """Start a private stack on simulated GPUs, run a sweep and a job across two
    nodes, show the results.

    Without --data-dir it works in a temporary directory and removes it at the end
    unless --keep is given (or a job failed: its logs are then kept).
    """
    from ugro.cli.demo import run_demo

    sys.exit(run_demo(data_dir, gpus, keep=keep))
