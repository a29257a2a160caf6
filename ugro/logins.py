"""The logins of ugro's web services (Flower, the dashboard): HTTP basic auth from a
setting (``user:password``), or, when it is unset, a password generated once into
a file of the data dir (mode 0600; a file others can read is refused)."""

from __future__ import annotations

import ipaddress
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ugro.errors import SpecError, StackError

#: The user of a generated login.
GENERATED_USER = "ugro"


@dataclass(frozen=True)
class Login:
    """Who may log in, and where that was decided."""

    user: str
    password: str
    # The setting's name, or the path of the generated file.
    source: str
    # True only when the password was generated just now: show it this once.
    generated: bool = False

    @property
    def credential(self) -> str:
        return f"{self.user}:{self.password}"


L = TypeVar("L", bound=Login)


def parse_basic_auth(value: str, where: str) -> tuple[str, str]:
    """Split ``user:password``.

    Raises:
        SpecError: no colon, or an empty user or password; the message names ``where``.
    """
    user, colon, password = value.partition(":")
    if not colon or not user.strip() or not password:
        raise SpecError(f"{where}: expected user:password with neither part empty")
    return user, password


def login_from(kind: type[L], configured: str | None, setting: str, path: Path) -> L:
    """The configured login (``configured``, the value of ``setting``), else the one
    generated into ``path``, made there at the first call.

    Raises:
        SpecError: the setting is not ``user:password``.
        StackError: the generated file is readable by others or unreadable.
    """
    # An empty value counts as unset, as in compose files that pass a variable through.
    if configured:
        user, password = parse_basic_auth(configured, setting)
        return kind(user, password, setting)
    if not path.exists():
        return _generate(kind, path)
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
    return kind(user, password, str(path))


def _generate(kind: type[L], path: Path) -> L:
    password = secrets.token_urlsafe(18)
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: two services starting at once never overwrite each other's password.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(f"{GENERATED_USER}:{password}\n")
    return kind(GENERATED_USER, password, str(path), generated=True)


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
