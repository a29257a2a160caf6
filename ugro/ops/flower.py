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

import ipaddress
import logging
import os
import secrets
import signal
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from ugro.errors import SpecError, StackError
from ugro.settings import Settings

#: The user of a generated login.
GENERATED_USER = "ugro"
AUTH_FILE_NAME = "flower-auth"
# The tasks page shows each job's id (in the task's kwargs) beside its state.
TASK_COLUMNS = "name,uuid,state,kwargs,received,started,runtime,worker"


@dataclass(frozen=True)
class FlowerLogin:
    """Who may log in to Flower, and where that was decided."""

    user: str
    password: str
    # "UGRO_FLOWER_BASIC_AUTH", or the path of the generated file.
    source: str
    # True only when the password was generated just now: show it this once.
    generated: bool = False

    @property
    def credential(self) -> str:
        return f"{self.user}:{self.password}"


def parse_basic_auth(value: str, where: str) -> tuple[str, str]:
    """Split ``user:password``.

    Raises:
        SpecError: no colon, or an empty user or password; the message names ``where``.
    """
    user, colon, password = value.partition(":")
    if not colon or not user.strip() or not password:
        raise SpecError(f"{where}: expected user:password with neither part empty")
    return user, password


def auth_file(settings: Settings) -> Path:
    return settings.data_dir / AUTH_FILE_NAME


def flower_login(settings: Settings) -> FlowerLogin:
    """The login Flower requires: the configured one, else the generated one.

    Raises:
        SpecError: ``UGRO_FLOWER_BASIC_AUTH`` is not ``user:password``.
        StackError: the generated file is readable by others or unreadable.
    """
    # An empty value (``UGRO_FLOWER_BASIC_AUTH=``) counts as unset, as in compose
    # files that pass a variable through.
    if settings.flower_basic_auth:
        user, password = parse_basic_auth(settings.flower_basic_auth, "UGRO_FLOWER_BASIC_AUTH")
        return FlowerLogin(user, password, "UGRO_FLOWER_BASIC_AUTH")
    path = auth_file(settings)
    if not path.exists():
        return _generate(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise StackError(
            f"{path} is readable by others (mode {mode:o}): `chmod 600 {path}`, or delete it"
            " for a new password"
        )
    try:
        user, password = parse_basic_auth(path.read_text(encoding="utf-8").strip(), str(path))
    except SpecError as exc:
        raise StackError(f"{exc}; delete it for a new password") from None
    return FlowerLogin(user, password, str(path))


def _generate(path: Path) -> FlowerLogin:
    password = secrets.token_urlsafe(18)
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: two Flowers starting at once never overwrite each other's password.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(f"{GENERATED_USER}:{password}\n")
    return FlowerLogin(GENERATED_USER, password, str(path), generated=True)


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


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
