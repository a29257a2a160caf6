"""Sealing a job's secret values: who can open them, and where the key lives."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ugro.live import secret_box
from ugro.live.secret_box import SecretBox, SecretsUnreadable
from ugro.settings import Settings

VALUES = {"WANDB_API_KEY": "s3cr3t-value", "HF_TOKEN": "hf_abc"}


def _settings(tmp_path: Path, **changes: object) -> Settings:
    return Settings(data_dir=tmp_path / "data", **changes)  # type: ignore[arg-type]


def test_a_sealed_value_opens_with_the_same_passphrase_only(tmp_path: Path) -> None:
    sealed = SecretBox(_settings(tmp_path, secret_key="lab passphrase")).seal(VALUES)
    assert "s3cr3t-value" not in sealed and "hf_abc" not in sealed
    again = SecretBox(_settings(tmp_path, secret_key="lab passphrase"))
    assert again.open(sealed) == VALUES
    other = SecretBox(_settings(tmp_path, secret_key="another"))
    with pytest.raises(SecretsUnreadable, match="UGRO_SECRET_KEY"):
        other.open(sealed)


def test_without_a_passphrase_the_redis_password_is_the_key(tmp_path: Path) -> None:
    url = "redis://:p%40ss@redis.lab:6379/0"
    sealed = SecretBox(_settings(tmp_path, redis_url=url)).seal(VALUES)
    assert SecretBox(_settings(tmp_path, redis_url=url)).open(sealed) == VALUES
    wrong = "redis://:other@redis.lab:6379/0"
    with pytest.raises(SecretsUnreadable):
        SecretBox(_settings(tmp_path, redis_url=wrong)).open(sealed)


def test_one_machine_without_a_password_makes_a_private_key_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tmp_path / "config" / "ugro" / "secret.key"
    monkeypatch.setattr(secret_box, "key_file", lambda: key)
    sealed = SecretBox(_settings(tmp_path)).seal(VALUES)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    made = key.read_bytes()
    # another process of the machine opens them with the same file, left as it was
    assert SecretBox(_settings(tmp_path)).open(sealed) == VALUES
    assert key.read_bytes() == made
    assert [p.name for p in key.parent.iterdir()] == ["secret.key"]
    assert not str(key).startswith(str(tmp_path / "data"))
