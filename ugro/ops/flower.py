"""Flower: the web view of ugro's workers, tasks and queues, never without a login.

Flower runs in this process on ugro's own Celery app (``make_app``), so it reads the
same broker, key prefix and queues as the workers: each GPU worker by its name
(``gpu<i>@<node>``), each job's ``ugro.run_job`` task with its job id, and the
depth of every queue on the Broker page.

Authentication is always on: HTTP basic auth from ``UGRO_FLOWER_BASIC_AUTH``, or,
when that is unset, a password generated once into ``<data_dir>/flower-auth``
(mode 0600). Flower is built here rather than by ``celery flower``, whose login
goes on a command line (where ``ps`` shows it to every user of the machine) or in
``FLOWER_*`` variables, and which executes ``./flowerconfig.py`` from whatever
directory it starts in.

Flower is read-only unless asked: its controls (revoke, terminate, shut a worker
down, move a worker to another queue, apply a task) bypass ugro's own stop
sequence and leases; ``ugro cancel`` is the way to stop a job.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from ugro.errors import StackError
from ugro.logins import Login, login_from
from ugro.settings import Settings

AUTH_FILE_NAME = "flower-auth"
# The tasks page shows each job's id (in the task's kwargs) beside its state.
TASK_COLUMNS = "name,uuid,state,kwargs,received,started,runtime,worker"

#: Who may log in to Flower (``ugro.logins``).
FlowerLogin = Login


def auth_file(settings: Settings) -> Path:
    return settings.data_dir / AUTH_FILE_NAME


def flower_login(settings: Settings) -> FlowerLogin:
    """The login Flower requires: ``UGRO_FLOWER_BASIC_AUTH``, else the generated one.

    Raises:
        SpecError: ``UGRO_FLOWER_BASIC_AUTH`` is not ``user:password``.
        StackError: the generated file is readable by others or unreadable.
    """
    return login_from(
        FlowerLogin, settings.flower_basic_auth, "UGRO_FLOWER_BASIC_AUTH", auth_file(settings)
    )


def run_flower(
    settings: Settings,
    login: FlowerLogin,
    *,
    allow_control: bool = False,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve Flower until SIGTERM or SIGINT.

    Args:
        settings: the installation to watch; Flower listens on its
            ``flower_address``:``flower_port``.
        login: the only credential Flower accepts.
        allow_control: let Flower revoke tasks and control workers.
        on_ready: called with Flower's URL once it listens.

    Raises:
        NotRunningError: Redis does not answer.
        StackError: the address cannot be bound.
    """
    from flower.app import Flower
    from flower.options import options
    from flower.urls import settings as tornado_settings

    from ugro.live.connection import connect
    from ugro.transport.celery_app import make_app

    connect(settings).close()  # fail now, with a hint, rather than log retries forever
    options.address = settings.flower_address
    options.port = settings.flower_port
    options.basic_auth = [login.credential]
    options.read_only = not allow_control
    options.tasks_columns = TASK_COLUMNS
    # ugro's workers send task events from the start (celery_app), so Flower need
    # not broadcast enable_events to every worker every 5 s.
    options.enable_events = False
    _quiet_access_log()

    app = make_app(settings)
    flower = Flower(capp=app, options=options, **tornado_settings)
    try:
        port = flower.start_http_server()
    except OSError as exc:
        raise StackError(
            f"Flower cannot listen on {settings.flower_address}:{settings.flower_port} ({exc}):"
            " choose another with UGRO_FLOWER_PORT or --port"
        ) from None
    if on_ready is not None:
        host = settings.flower_address
        on_ready(f"http://{f'[{host}]' if ':' in host else host}:{port}/")

    def _stop(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    try:
        flower.start()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        flower.stop()


def _quiet_access_log() -> None:
    # One line per request (the pages refresh themselves) would drown the log.
    access = logging.getLogger("tornado.access")
    access.addHandler(logging.NullHandler())
    access.propagate = False
