"""Which environment values are secrets, and how they are hidden on disk."""

from __future__ import annotations

import re
from collections.abc import Mapping

REDACTED = "***"

_SECRET_NAME = re.compile(
    r"(SECRET|TOKEN|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL|PRIVATE|API_?KEY|ACCESS_?KEY|AUTH)",
    re.IGNORECASE,
)


def is_secret_name(name: str) -> bool:
    """Whether an env variable's name says it holds a secret (``WANDB_API_KEY``...)."""
    return bool(_SECRET_NAME.search(name))


def split_secrets(env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Split ``env`` into (values safe to store, secret values)."""
    plain = {k: v for k, v in env.items() if not is_secret_name(k)}
    secret = {k: v for k, v in env.items() if is_secret_name(k)}
    return plain, secret


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with every secret value replaced by ``***``."""
    return {k: (REDACTED if is_secret_name(k) else v) for k, v in env.items()}
