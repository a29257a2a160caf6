"""`ugro web`: the web dashboard, in the foreground."""

from __future__ import annotations

import click

from ugro.cli.base import err, main, settings_from_env


@main.command()
@click.option("--address", default=None, help="Listen here (default: UGRO_WEB_ADDRESS).")
@click.option("--port", type=int, default=None, help="Listen here (default: UGRO_WEB_PORT, 8265).")
def web(address: str | None, port: int | None) -> None:
    """Run the web dashboard (jobs, GPUs, nodes, queue, summaries), login required."""
    import logging

    from ugro.logins import is_loopback
    from ugro.web.auth import SETTING, web_login
    from ugro.web.server import serve

    settings = settings_from_env()
    changes = {"web_address": address, "web_port": port}
    settings = settings.model_copy(update={k: v for k, v in changes.items() if v is not None})
    login = web_login(settings)
    if login.generated:
        err().print(
            f"dashboard login (shown this once): user [bold]{login.user}[/] password"
            f" [bold]{login.password}[/]  (kept in {login.source}, mode 0600)"
        )
    if not is_loopback(settings.web_address):
        err().print(
            f"[yellow]warning:[/] the dashboard listens on {settings.web_address}: the login"
            " crosses the network in clear unless a TLS proxy stands in front"
        )
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    def ready(url: str) -> None:
        where = SETTING if login.source == SETTING else login.source
        err().print(f"dashboard at {url}  log in as {login.user} (password: {where})")

    serve(settings, login, on_ready=ready)
