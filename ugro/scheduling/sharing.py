"""How a lab shares its GPUs: each user's and group's share and quotas, from the
``[sharing]`` table of the cluster file.

```toml
[sharing]
by = "user"                 # whose usage fair share compares: "user" or "group"
order = "fair"              # or "shortest-first": shorter declared timeouts first
starvation_hours = 48       # (shortest-first) a job queued this long goes first

[sharing.users."*"]         # every user without an entry of their own
max_gpus = 16

[sharing.users.alice]
share = 2                   # twice the GPU time of a share of 1
max_gpus = 8                # GPUs her jobs hold at once, at most
max_queued = 200            # jobs she may have queued, at most

[sharing.groups.vision]
max_gpus = 24

[sharing.preemption]        # a short job kept waiting may stop --preemptible jobs
after_minutes = 5           # once it has waited this long
max_timeout_minutes = 60    # if its --timeout is at most this
min_run_minutes = 10        # a job that ran less than this is not stopped
max_per_job = 3             # nor one stopped this many times already
```

Without the table every share is 1 and nobody has a quota, and fair share alone
orders the jobs of each priority. With ``order = "shortest-first"``, jobs of a
shorter declared length go first (``fair_share.shortest_first``: lengths in
classes that double from an hour), fair share ordering each class, and a job
queued over ``starvation_hours`` goes before them all, so none waits for ever.

With ``[sharing.preemption]``, a short job that waits stops running jobs that
agreed to it, of users who used more than its own (``ugro.scheduling.preemption``).

A quota on GPUs (``max_gpus``) is kept by dispatch: a job that would take its
user or group over it waits, and says so. One on queued jobs (``max_queued``) is kept by submit,
which refuses a batch that would go over it, naming the limit; two submitters
at the same moment may each pass it (it is checked, not locked).

The file is read again when it changes (its modification time), so a change
applies at the next dispatch pass or submit.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ugro.errors import InventoryError, SpecError
from ugro.jobs.spec import JobSpec
from ugro.registry.store import Registry
from ugro.registry.usage import held_by_owner, owners_of, queued_count
from ugro.settings import Settings

AccountKind = Literal["user", "group"]
#: The entry of ``users`` or ``groups`` that applies to those without their own.
EVERYONE = "*"


class Limits(BaseModel):
    """One user's or group's share and quotas."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    share: float = Field(1.0, gt=0)
    max_gpus: int | None = Field(None, ge=1)
    max_queued: int | None = Field(None, ge=0)


class PreemptionPolicy(BaseModel):
    """The ``[sharing.preemption]`` table: when a waiting job may stop others."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    after_minutes: float = Field(default=5.0, ge=0)
    max_timeout_minutes: float = Field(default=60.0, gt=0)
    min_run_minutes: float = Field(default=10.0, ge=0)
    max_per_job: int = Field(default=3, ge=1)

    def may_preempt(self, timeout: float | None, waited: float) -> bool:
        """Whether a waiting job of ``timeout`` (s) that has waited ``waited`` (s)
        may stop others: a short declared job, waiting long enough."""
        return (
            timeout is not None
            and timeout <= self.max_timeout_minutes * 60
            and waited >= self.after_minutes * 60
        )


class SharingPolicy(BaseModel):
    """The ``[sharing]`` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    by: AccountKind = "user"
    order: Literal["fair", "shortest-first"] = "fair"
    starvation_hours: float = Field(default=48.0, gt=0)
    # Off unless the table is there.
    preemption: PreemptionPolicy | None = None
    users: dict[str, Limits] = Field(default_factory=dict)
    groups: dict[str, Limits] = Field(default_factory=dict)

    def limits(self, kind: AccountKind, name: str | None) -> Limits | None:
        table = self.users if kind == "user" else self.groups
        if not name:
            return None  # (a job of no group counts against no group's quota)
        return table.get(name) or table.get(EVERYONE)

    @property
    def shortest_first(self) -> bool:
        return self.order == "shortest-first"

    @property
    def caps_gpus(self) -> bool:
        """Whether any user or group has a quota on the GPUs it holds."""
        tables = (*self.users.values(), *self.groups.values())
        return any(limits.max_gpus is not None for limits in tables)

    def capped_accounts(self, user: str | None, group: str | None) -> tuple[Account, ...]:
        """The accounts with a GPU quota that a job of ``user`` and ``group`` counts
        against."""
        owner: tuple[tuple[AccountKind, str | None], ...] = (("user", user), ("group", group))
        found = []
        for kind, name in owner:
            limits = self.limits(kind, name)
            if limits is not None and limits.max_gpus is not None and name:
                found.append(Account(kind, name))
        return tuple(found)

    def account_of(self, user: str | None, group: str | None) -> str:
        """Whose usage fair share counts a job in: its user's, or its group's."""
        return (group if self.by == "group" else user) or ""

    def shares(self) -> dict[str, float]:
        table = self.groups if self.by == "group" else self.users
        return {name: limits.share for name, limits in table.items() if name != EVERYONE}

    def share_of(self, account: str) -> float:
        limits = self.limits(self.by, account)
        return limits.share if limits is not None else 1.0


@dataclass(frozen=True)
class Account:
    """A user or group, as a quota counts it."""

    kind: AccountKind
    name: str

    @property
    def key(self) -> str:  # (as ``PendingJob.accounts`` names it)
        return f"{self.kind}:{self.name}"


NO_SHARING = SharingPolicy()
# (path, modification time in ns, size) -> the policy read then
_read: dict[Path, tuple[tuple[int, int], SharingPolicy]] = {}


def sharing_policy(settings: Settings) -> SharingPolicy:
    """The cluster file's ``[sharing]`` table (none: equal shares, no quota).

    Raises:
        InventoryError: the file cannot be read, is not TOML, or the table is
            invalid; the message names the file and what is wrong.
    """
    path = settings.effective_cluster_file
    if path is None:
        return NO_SHARING
    try:
        stat = path.stat()
    except FileNotFoundError:
        return NO_SHARING
    except OSError as exc:
        raise InventoryError(f"cluster file {path}: cannot read it: {exc.strerror}") from exc
    version = (stat.st_mtime_ns, stat.st_size)
    cached = _read.get(path)
    if cached is not None and cached[0] == version:
        return cached[1]
    policy = load_sharing(path)
    _read[path] = (version, policy)
    return policy


def load_sharing(path: Path) -> SharingPolicy:
    """The ``[sharing]`` table of the cluster file at ``path``."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InventoryError(f"cluster file {path}: cannot read it: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InventoryError(f"cluster file {path}: not valid TOML: {exc}") from exc
    table = document.get("sharing", {})
    try:
        return SharingPolicy.model_validate(table)
    except ValidationError as exc:
        problems = "; ".join(
            f"sharing.{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        raise InventoryError(f"cluster file {path}: {problems}") from None


def headroom(
    policy: SharingPolicy,
    held: Mapping[tuple[str | None, str | None], int],
    wanting: Iterable[tuple[str | None, str | None]],
) -> dict[str, int]:
    """How many more GPUs each capped account of ``held`` (GPUs held now by each
    (user, group)) and of ``wanting`` (the (user, group) of each waiting job) may
    hold."""
    holding: dict[Account, int] = {}
    for (user, group), gpus in held.items():
        for account in policy.capped_accounts(user, group):
            holding[account] = holding.get(account, 0) + gpus
    for user, group in wanting:
        for account in policy.capped_accounts(user, group):
            holding.setdefault(account, 0)
    left: dict[str, int] = {}
    for account, gpus in holding.items():
        limits = policy.limits(account.kind, account.name)
        if limits is not None and limits.max_gpus is not None:
            left[account.key] = limits.max_gpus - gpus
    return left


def over_gpu_quota(
    policy: SharingPolicy,
    user: str | None,
    group: str | None,
    gpus: int,
    held: Mapping[tuple[str | None, str | None], int],
) -> str | None:
    """Why a job of ``gpus`` GPUs (on all its nodes) of ``user`` and ``group``
    cannot start for a quota now ("alice has 8 of 8 GPUs"), or None."""
    for account in policy.capped_accounts(user, group):
        limits = policy.limits(account.kind, account.name)
        assert limits is not None and limits.max_gpus is not None
        holding = sum(
            n for (u, g), n in held.items() if (u if account.kind == "user" else g) == account.name
        )
        if holding + gpus > limits.max_gpus:
            whose = account.name if account.kind == "user" else f"group {account.name}"
            return f"quota: {whose} has {holding} of {limits.max_gpus} GPUs (this job needs {gpus})"
    return None


@dataclass(frozen=True)
class QuotaView:
    """What a dispatch pass needs of the GPU quotas: each waiting job's capped
    accounts (``Account.key``) and how many more GPUs each of those may hold."""

    accounts: dict[str, tuple[str, ...]]
    headroom: dict[str, int]


def quota_view(registry: Registry, policy: SharingPolicy, job_ids: Sequence[str]) -> QuotaView:
    """The quotas' view for a pass over ``job_ids``: two registry reads, made only
    when some user or group has a GPU quota."""
    owners = owners_of(registry, job_ids)
    held = held_by_owner(registry)
    accounts = {
        job_id: tuple(account.key for account in policy.capped_accounts(*owner))
        for job_id, owner in owners.items()
    }
    return QuotaView(accounts, headroom(policy, held, owners.values()))


def check_submit(
    registry: Registry, policy: SharingPolicy, specs: Sequence[JobSpec], user: str | None
) -> None:
    """Refuse a batch of ``user``'s jobs that no quota would ever let start, or
    that would take a user or group over its quota of queued jobs.

    Raises:
        SpecError: naming the job, the quota and whose it is.
    """
    for spec in specs:
        for account in policy.capped_accounts(user, spec.group):
            limits = policy.limits(account.kind, account.name)
            assert limits is not None and limits.max_gpus is not None
            if spec.gpus * spec.nodes > limits.max_gpus:
                raise SpecError(
                    f"gpus: {spec.name!r} asks {spec.gpus * spec.nodes} GPUs; the quota of"
                    f" {account.kind} {account.name!r} is {limits.max_gpus} at once"
                )
    adding: dict[Account, int] = {}
    for spec in specs:
        owner: tuple[tuple[AccountKind, str | None], ...] = (("user", user), ("group", spec.group))
        for kind, name in owner:
            if name:
                account = Account(kind, name)
                adding[account] = adding.get(account, 0) + 1
    for account, count in adding.items():
        limits = policy.limits(account.kind, account.name)
        if limits is None or limits.max_queued is None:
            continue
        queued = queued_count(registry, account.kind, account.name)
        if queued + count > limits.max_queued:
            raise SpecError(
                f"quota: {account.kind} {account.name!r} may have {limits.max_queued} jobs"
                f" queued; {queued} are, and this submits {count}"
            )


def quota_reason(
    registry: Registry, settings: Settings, user: str | None, group: str | None, gpus: int
) -> str | None:
    """Why a queued job of ``gpus`` GPUs (on all its nodes) waits for a quota now
    ("quota: alice has 8 of 8 GPUs"), or None."""
    policy = sharing_policy(settings)
    if not policy.capped_accounts(user, group):
        return None
    return over_gpu_quota(policy, user, group, gpus, held_by_owner(registry))
