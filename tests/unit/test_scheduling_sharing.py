"""The [sharing] table (shares and quotas) and what placement makes of a quota."""

from __future__ import annotations

from pathlib import Path

import pytest

from ugro.errors import InventoryError
from ugro.scheduling.placement import PendingJob, plan_placements
from ugro.scheduling.sharing import NO_SHARING, headroom, load_sharing, over_gpu_quota

POLICY = """
[[node]]
name = "gpu-a"
host = "198.18.0.2"

[sharing]
by = "user"

[sharing.users."*"]
max_gpus = 4

[sharing.users.alice]
share = 2
max_gpus = 2
max_queued = 10

[sharing.groups.vision]
max_gpus = 3
"""


@pytest.fixture
def cluster_file(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(POLICY)
    return path


def test_the_table_gives_shares_and_quotas_with_a_default_for_everyone(cluster_file: Path) -> None:
    policy = load_sharing(cluster_file)
    alice, carol = policy.limits("user", "alice"), policy.limits("user", "carol")
    assert alice is not None and (alice.share, alice.max_gpus, alice.max_queued) == (2, 2, 10)
    assert carol is not None and (carol.share, carol.max_gpus) == (1, 4)  # the "*" entry
    assert policy.share_of("alice") == 2 and policy.share_of("carol") == 1
    assert policy.limits("group", "nlp") is None
    keys = [account.key for account in policy.capped_accounts("alice", "vision")]
    assert keys == ["user:alice", "group:vision"]
    assert policy.caps_gpus and not NO_SHARING.caps_gpus


@pytest.mark.parametrize(
    ("table", "named"),
    [
        ("[sharing]\nby = 'team'\n", "sharing.by"),
        ("[sharing.users.alice]\nmax_gpus = 0\n", "sharing.users.alice.max_gpus"),
        ("[sharing.users.alice]\nshare = -1\n", "sharing.users.alice.share"),
        ("[sharing.users.alice]\nmax_gpu = 2\n", "sharing.users.alice.max_gpu"),
        ("[sharing]\nquota = 2\n", "sharing.quota"),
        ("[sharing]\norder = 'random'\n", "sharing.order"),
        ("[sharing]\nstarvation_hours = 0\n", "sharing.starvation_hours"),
        ("[sharing.preemption]\nafter_minutes = -1\n", "sharing.preemption.after_minutes"),
        ("[sharing.preemption]\nafter = 5\n", "sharing.preemption.after"),
    ],
)
def test_a_bad_table_is_refused_naming_the_file_and_the_key(
    tmp_path: Path, table: str, named: str
) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(table)
    with pytest.raises(InventoryError, match=f"cluster file {path}: .*{named}"):
        load_sharing(path)


def test_headroom_counts_what_each_account_holds_and_those_that_hold_nothing(
    cluster_file: Path,
) -> None:
    policy = load_sharing(cluster_file)
    held = {("alice", "vision"): 1, ("bob", None): 3}
    left = headroom(policy, held, [("alice", None), ("dave", None)])
    assert left == {"user:alice": 1, "group:vision": 2, "user:bob": 1, "user:dave": 4}
    assert over_gpu_quota(policy, "bob", None, 2, held) == (
        "quota: bob has 3 of 4 GPUs (this job needs 2)"
    )
    assert over_gpu_quota(policy, "alice", "vision", 1, held) is None
    assert over_gpu_quota(policy, "carol", "vision", 3, held) == (
        "quota: group vision has 1 of 3 GPUs (this job needs 3)"
    )


def test_placement_passes_over_a_job_over_its_quota_without_reserving_for_it() -> None:
    alice = ("user:alice",)
    pending = [
        PendingJob("a1", 1, accounts=alice),
        PendingJob("a2", 1, accounts=alice),  # over: alice may start one more
        PendingJob("big", 4, accounts=("user:bob",)),  # over too, for a quota
        PendingJob("b1", 2, accounts=("user:bob",)),
        PendingJob("free", 1),
    ]
    plans = plan_placements(
        pending,
        free={"n1": [0, 1, 2, 3]},
        capacity={"n1": 4},
        busy_ends={"n1": []},
        headroom={"user:alice": 1, "user:bob": 2},
    )
    assert [(p.job_id, p.gpus) for p in plans] == [("a1", (0,)), ("b1", (1, 2)), ("free", (3,))]
