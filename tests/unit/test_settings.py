"""The settings jobs across nodes and self-fencing add: refused when they could
not hold, derived when not given."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ugro.settings import Settings


def test_a_fence_grace_must_end_before_the_lease_runs_out() -> None:
    with pytest.raises(ValidationError, match=r"fence_grace .* must be less than lease_ttl"):
        Settings(lease_ttl=10.0, fence_grace=10.0)
    assert Settings(lease_ttl=10.0, fence_grace=6.0).fence_after == 6.0
    # By default: the lease TTL less two heartbeats
    assert Settings(lease_ttl=30.0, heartbeat_interval=5.0).fence_after == 20.0


def test_the_rendezvous_ports_are_a_range_of_unprivileged_ports() -> None:
    assert Settings(master_ports="40000-40100").master_port_range == (40000, 40100)
    for bad in ("29500", "a-b", "80-90", "30000-29000"):
        with pytest.raises(ValidationError, match="master_ports"):
            Settings(master_ports=bad)


def test_a_redis_url_is_shown_without_its_password() -> None:
    settings = Settings(redis_url="redis://:s3cret@host:6379/0")
    assert settings.shown_redis_url == "redis://:***@host:6379/0"
    assert Settings(redis_url="redis://host:6379/0").shown_redis_url == "redis://host:6379/0"
