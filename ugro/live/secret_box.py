"""A job's secret env values, sealed before they reach Redis.

Redis keeps what it is given on disk: the embedded server's append-only file lies
in the data dir, a deployment's in its volume, and both end up in backups. So a
job's secret values (``ugro.jobs.redact``) are sealed with Fernet (AES-128-CBC and
HMAC-SHA256, from the ``cryptography`` package) under a key that no file of the
data dir or of Redis holds:

- ``UGRO_SECRET_KEY`` when it is set (any passphrase; every node and every
  submitter needs the same);
- else one derived from the Redis password, which each of them has already (a
  deployment's Redis has one: docker/README.md);
- else, on one machine with the embedded Redis and no password, a random key in
  the user's config dir (``~/.config/ugro/secret.key``, mode 0600), made at first
  use.

A node whose key differs cannot open them: its job fails with an error that says
so; it never runs with the values missing.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ugro.errors import UgroError
from ugro.settings import Settings

if TYPE_CHECKING:
    # Loaded at the first seal or open: most commands keep no secret.
    from cryptography.fernet import Fernet


class SecretsUnreadable(UgroError):
    """A job's sealed secret values do not open with this node's key."""


def key_file() -> Path:
    """Where the key of a machine without a Redis password or UGRO_SECRET_KEY lives."""
    import platformdirs

    return Path(platformdirs.user_config_dir("ugro", appauthor=False)) / "secret.key"


def _derived(material: str) -> bytes:
    """A Fernet key from a passphrase or password (HKDF-SHA256)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"ugro job secrets", info=b"fernet")
    return base64.urlsafe_b64encode(hkdf.derive(material.encode()))


def _machine_key(path: Path) -> bytes:
    """The key in ``path``, made there first when there is none (the first of
    several processes to link its file wins; the others read it)."""
    from cryptography.fernet import Fernet

    with contextlib.suppress(FileNotFoundError):
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(Fernet.generate_key())
    try:
        os.link(draft, path)  # whole or not at all: no reader sees half a key
    except FileExistsError:
        pass
    finally:
        draft.unlink()
    return path.read_bytes().strip()


class SecretBox:
    """Seals and opens a job's secret values with the key the settings give."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._fernet: Fernet | None = None

    def _key(self) -> Fernet:
        from cryptography.fernet import Fernet

        if self._fernet is None:
            settings = self._settings
            if settings.secret_key is not None:
                key = _derived(settings.secret_key.get_secret_value())
            elif (password := settings.redis_password) is not None:
                key = _derived(password)
            else:
                key = _machine_key(key_file())
            self._fernet = Fernet(key)
        return self._fernet

    def seal(self, values: dict[str, str]) -> str:
        return self._key().encrypt(json.dumps(values).encode()).decode()

    def open(self, sealed: str) -> dict[str, str]:
        """The values ``seal`` sealed.

        Raises:
            SecretsUnreadable: they were sealed under another key.
        """
        from cryptography.fernet import InvalidToken

        try:
            return dict(json.loads(self._key().decrypt(sealed.encode())))
        except InvalidToken:
            raise SecretsUnreadable(
                "the job's secret env values do not open on this node: its UGRO_SECRET_KEY"
                " (or, without one, its Redis password) differs from the submitter's"
            ) from None
