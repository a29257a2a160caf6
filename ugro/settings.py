"""Settings: every knob ugro reads, from ``UGRO_*`` environment variables.

Settings are a plain object passed to what needs them, never a global; the CLI and
``Client()`` build one from the environment, tests build their own.

The environment is read here, as pydantic-settings would read it for these fields
(plain values, names in any case, what is given to the constructor first), rather
than by pydantic-settings itself: every `ugro` command builds a Settings, and that
package's import (its sources for dotenv files, secrets, cloud vaults and command
lines, and asyncio) costs a short command more than all the rest of its settings.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

# A unix socket path must fit sockaddr_un.sun_path (108 bytes on Linux).
_MAX_SOCKET_PATH = 100


#: The prefix of every setting's environment variable.
ENV_PREFIX = "UGRO_"


def _default_data_dir() -> Path:
    import platformdirs  # only when UGRO_DATA_DIR is not set

    return Path(platformdirs.user_data_dir("ugro", appauthor=False))


def _default_node_name() -> str:
    return socket.gethostname().split(".")[0] or "localhost"


def from_environment(fields: Iterable[str]) -> dict[str, str]:
    """The values of ``UGRO_<FIELD>`` variables set for these fields, by field name;
    a variable's name is matched in any case."""
    wanted = {f"{ENV_PREFIX}{name}".upper(): name for name in fields}
    return {
        wanted[key.upper()]: value for key, value in os.environ.items() if key.upper() in wanted
    }


class Settings(BaseModel):
    """ugro's configuration; each field is ``UGRO_<FIELD>`` in the environment.

    ``Settings(**values)`` takes ``values`` first, then the environment, then the
    defaults; a value of the wrong type raises pydantic's ValidationError, which
    names the field.
    """

    # Unknown names are ignored, and defaults are checked like the rest (a default
    # data dir is made absolute like a given one).
    model_config = ConfigDict(extra="ignore", validate_default=True)

    data_dir: Path = Field(default_factory=_default_data_dir)
    # None means: start and use the embedded Redis under the data dir.
    redis_url: str | None = None
    # None means: SQLite in the data dir.
    database_url: str | None = None
    # Prefix of every Redis key ugro and its Celery queues write, so that several
    # installations (or test runs) can share one Redis server.
    redis_prefix: str = "ugro"
    node_name: str = Field(default_factory=_default_node_name)
    # Who a submitted job is recorded as: the OS user unless set (a shared account's
    # people each set their own).
    user: str | None = None
    # "auto" (NVML when a GPU answers, else CPU slots), "nvml", "fake:N" or "cpu".
    gpu_backend: str = "auto"
    timezone: str = "UTC"

    # Liveness. The worker renews its leases and heartbeat every
    # heartbeat_interval; a lease outlives a missed renewal or two, not more.
    heartbeat_interval: float = 5.0
    lease_ttl: float = 30.0
    # A worker that could not renew its running job's lease for this long stops
    # the job itself, before the lease can run out and the job run elsewhere
    # (default: lease_ttl less two heartbeats; it must be less than lease_ttl).
    fence_grace: float | None = Field(default=None, gt=0)
    # A placed job whose worker never claims it frees its GPUs after this long.
    placement_ttl: float = 120.0
    # How long a worker key lives without a refresh before dispatch skips that GPU.
    worker_ttl: float = 15.0
    # Celery's Redis transport redelivers an unacked message after this; ugro acks
    # job messages on receipt, so it only matters for control tasks.
    visibility_timeout: float = 3600.0
    # SIGTERM -> SIGKILL grace when ugro stops a job.
    stop_grace: float = 30.0
    # Beat's safety-net dispatch tick, in seconds.
    dispatch_interval: float = 30.0
    # Beat's reconcile tick: finds lost jobs and rebuilds live state after a wipe.
    # A dead worker's job is declared lost at most lease_ttl (lease expiry) +
    # reconcile_interval after its last heartbeat (a lease_ttl more just after a
    # Redis outage: ugro.execution.reconcile). A dead GPU worker whose supervisor
    # lives is lost at once (ugro.execution.worker_lost).
    reconcile_interval: float = 15.0
    # How often a node agent looks for job processes that no running attempt owns.
    orphan_scan_interval: float = 10.0
    # Jobs across nodes. This node's address as the other nodes reach it: a gang's
    # rank 0 address is its MASTER_ADDR (default: the address of the interface
    # that reaches Redis). MASTER_PORT is taken from master_ports ("low-high") by
    # the job's id and attempt. A member that has not started gang_start_timeout
    # seconds after the first did fails the attempt.
    node_address: str | None = None
    master_ports: str = "29500-29999"
    gang_start_timeout: float = Field(default=120.0, gt=0)
    # A worker with a job in hand waits this long for a registry that does not
    # answer (its claim, start or end retried with backoff; the job's lease kept)
    # before it gives the end up; a command fails at once (exit 3).
    registry_wait: float = Field(default=600.0, gt=0)
    # The key that seals a job's secret env values in Redis (any passphrase, the
    # same on every node and submitter; default: derived from the Redis password,
    # or a key of this machine: ugro.live.secret_box).
    secret_key: SecretStr | None = None
    # Fair share: a user's GPU-seconds count half after this long (7 days).
    fair_share_half_life: float = Field(default=7 * 86400.0, gt=0)
    # Reservations reckon a running job's end from its ETA when it has one
    # (ugro.scheduling.placement); off: from its timeout only.
    reserve_by_eta: bool = False
    # Retry backoff: base * 2^(attempt-1) seconds, at most retry_backoff_max.
    retry_backoff: float = 10.0
    retry_backoff_max: float = 600.0
    # One beat schedules at a time (RedBeat's lock in Redis): a standby beat takes
    # over at most this long after the active one died.
    beat_lock_timeout: float = Field(default=30.0, ge=10.0)
    # Progress: a running job whose logs and metrics did not change for stuck_after
    # seconds is stuck (stopped and requeued); a run finished longer than
    # outdated_after ago is outdated. The scan runs every progress_interval.
    stuck_after: float = 3 * 3600.0
    outdated_after: float = 30 * 86400.0
    progress_interval: float = 60.0
    # A GPU with more memory used than this by programs other than ugro's jobs is
    # left alone until it is free again (MiB).
    foreign_memory_mb: float = 1024.0

    # Node health. Each node agent reads its node every health_collect_interval;
    # beat's sweep scores every node, every 5 s while jobs run or a node is
    # degraded, backing off to 60 s when all is calm.
    health_collect_interval: float = 5.0
    health_min_interval: float = 5.0
    health_max_interval: float = 60.0
    # Nodes probed over SSH (TOML: [[node]] name, host, port, user, key);
    # default <data_dir>/cluster.toml when it exists.
    cluster_file: Path | None = None
    # Host keys are checked against this file (default ~/.ssh/known_hosts).
    known_hosts: Path | None = None
    ssh_timeout: float = 3.0
    # Circuit breaker per node: this many failed checks in a row open it for
    # breaker_open_seconds; then one half-open check closes or reopens it.
    breaker_failures: int = 3
    breaker_open_seconds: float = 300.0
    # Thresholds of the health score (0-100; GPU 40, system 30, network 20,
    # process 10) and of its levels.
    gpu_temp_warning_c: float = 83.0
    gpu_temp_critical_c: float = 92.0
    disk_warning_percent: float = 90.0
    disk_critical_percent: float = 97.0
    # Below this much free space the data dir's disk is critical whatever its
    # percentage: jobs and ugro's own bookkeeping can no longer write.
    disk_critical_free_mb: float = 64.0
    memory_warning_percent: float = 90.0
    memory_critical_percent: float = 98.0
    cpu_warning_percent: float = 95.0
    latency_warning_ms: float = 250.0
    score_warning: int = 80
    score_critical: int = 50
    # Health samples are kept this many days.
    health_retention_days: float = 8.0

    # Notifications (apprise URLs: slack://, mailto://, json://, ...), separated by
    # commas or spaces; critical alerts and the daily summary go there.
    notify_urls: str = ""
    # Idle GPUs held by jobs, and notices of jobs' ends (ugro.health.idle,
    # ugro.scheduling.end_notice). A leased GPU whose utilisation stays under
    # idle_gpu_percent for idle_gpu_after seconds is flagged (and its job stopped,
    # reason "idle", when submitted with on_idle="stop"). notify_on is what a job
    # that does not say sends to notify_urls when it ends: "never", "failed" (its
    # failure only) or "ended" (any end). alert_level is the lowest node health
    # level alerted there: "CRITICAL", or "WARNING" for both.
    idle_gpu_percent: float = 5.0
    idle_gpu_after: float = 1800.0
    notify_on: Literal["never", "failed", "ended"] = "never"
    alert_level: Literal["CRITICAL", "WARNING"] = "CRITICAL"
    # Daily summary: written at 23:59 in `timezone`, kept this many days; runs
    # longer than summary_long_run_days are listed.
    summary_retention_days: int = 30
    summary_long_run_days: float = 7.0
    # Ended jobs (rows, Redis records and folders) are removed this many days after
    # their end by beat's daily retention run; None keeps them until `ugro gc`.
    job_retention_days: float | None = Field(default=None, gt=0)

    # Flower: loopback by default; basic auth "user:password" (when unset, a
    # password is generated into <data_dir>/flower-auth, mode 0600).
    flower_address: str = "127.0.0.1"
    flower_port: int = 5555
    flower_basic_auth: str | None = None
    # Prometheus exporter (`ugro exporter`): where it listens.
    metrics_address: str = "127.0.0.1"
    metrics_port: int = 9847
    # Web dashboard (`ugro web`): loopback by default; basic auth "user:password"
    # (when unset, a password is generated into <data_dir>/web-auth, mode 0600).
    web_address: str = "127.0.0.1"
    web_port: int = 8265
    web_basic_auth: str | None = None

    @field_validator("redis_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not value or not all(c.isalnum() or c in "-_." for c in value):
            raise ValueError("redis_prefix must be letters, digits, '-', '_' or '.'")
        return value

    @field_validator("master_ports")
    @classmethod
    def _check_ports(cls, value: str) -> str:
        low, _, high = value.partition("-")
        if not (low.strip().isdigit() and high.strip().isdigit()):
            raise ValueError(f"{value!r} is not a port range: use low-high, e.g. 29500-29999")
        if not 1024 <= int(low) <= int(high) <= 65535:
            raise ValueError(f"{value!r}: the ports must be 1024-65535, low before high")
        return value

    @model_validator(mode="after")
    def _fence_before_the_lease_runs_out(self) -> Settings:
        if self.fence_grace is not None and self.fence_grace >= self.lease_ttl:
            raise ValueError(
                f"fence_grace ({self.fence_grace:g} s) must be less than lease_ttl"
                f" ({self.lease_ttl:g} s): a worker cut off must stop its job before"
                " the job may run elsewhere"
            )
        return self

    @property
    def fence_after(self) -> float:
        """How long a worker runs a job whose lease it cannot renew."""
        if self.fence_grace is not None:
            return self.fence_grace
        return max(self.lease_ttl - 2 * self.heartbeat_interval, self.heartbeat_interval)

    @property
    def master_port_range(self) -> tuple[int, int]:
        low, _, high = self.master_ports.partition("-")
        return int(low), int(high)

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    def __init__(self, **values: Any) -> None:
        super().__init__(**(from_environment(type(self).model_fields) | values))

    # Derived locations -----------------------------------------------------------

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def arrays_dir(self) -> Path:
        """What each array was submitted as: ``<array_id>.json``."""
        return self.data_dir / "arrays"

    @property
    def run_dir(self) -> Path:
        """Pid files and process logs of the local stack."""
        return self.data_dir / "run"

    @property
    def redis_dir(self) -> Path:
        return self.data_dir / "redis"

    @property
    def redis_socket(self) -> Path:
        """The embedded Redis's unix socket: in the data dir when the path fits."""
        path = self.redis_dir / "redis.sock"
        if len(str(path)) <= _MAX_SOCKET_PATH:
            return path
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        short = Path(tempfile.gettempdir()) / f"ugro-{os.getuid()}-{digest}"
        return short / "redis.sock"

    @property
    def embedded_redis(self) -> bool:
        return self.redis_url is None

    @property
    def effective_redis_url(self) -> str:
        """The redis-py URL of the server in use."""
        if self.redis_url is not None:
            return self.redis_url
        return f"unix://{quote(str(self.redis_socket))}"

    @property
    def redis_password(self) -> str | None:
        """The password of the Redis URL, if it has one."""
        password = urlsplit(self.effective_redis_url).password
        return unquote(password) if password is not None else None

    @property
    def shown_redis_url(self) -> str:
        """The Redis URL to print: its password, if any, as ``***``."""
        parts = urlsplit(self.effective_redis_url)
        if parts.password is None:
            return self.effective_redis_url
        user = parts.username or ""
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))

    @property
    def broker_url(self) -> str:
        """The same server as a kombu URL (kombu spells unix sockets redis+socket)."""
        url = self.effective_redis_url
        if url.startswith("unix://"):
            return "redis+socket://" + url.removeprefix("unix://")
        return url

    @property
    def notify_url_list(self) -> list[str]:
        return [url for url in self.notify_urls.replace(",", " ").split() if url]

    @property
    def summaries_dir(self) -> Path:
        return self.data_dir / "summaries"

    @property
    def effective_cluster_file(self) -> Path | None:
        if self.cluster_file is not None:
            return self.cluster_file
        default = self.data_dir / "cluster.toml"
        return default if default.exists() else None

    @property
    def effective_known_hosts(self) -> Path:
        return self.known_hosts or Path("~/.ssh/known_hosts").expanduser()

    @property
    def effective_database_url(self) -> str:
        if self.database_url is not None:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'registry.sqlite3'}"
