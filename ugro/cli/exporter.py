"""`ugro exporter`: the Prometheus exporter, in the foreground."""

from __future__ import annotations

import contextlib
import signal
import threading

import click

from ugro.cli.base import client_from_env, err, main


@main.command()
@click.option("--address", default=None, help="Listen address (default UGRO_METRICS_ADDRESS).")
@click.option("--port", type=int, default=None, help="Port (default UGRO_METRICS_PORT, 9847).")
def exporter(address: str | None, port: int | None) -> None:
    """Serve Prometheus metrics of jobs, queues, GPUs and nodes until stopped."""
    from ugro.ops.metrics import serve_metrics

    with client_from_env() as client:
        settings = client.settings
        host = address or settings.metrics_address
        where = port if port is not None else settings.metrics_port
        try:
            server = serve_metrics(client.rt, host, where)
        except OSError as exc:
            err().print(f"[bold red]error:[/] cannot listen on {host}:{where}: {exc.strerror}")
            raise SystemExit(3) from None
        err().print(f"metrics on http://{host}:{where}/metrics (Ctrl-C stops)")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
        server.shutdown()
