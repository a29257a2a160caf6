"""The pure parts of gang jobs: the rendezvous port and variables, the spec, and
how an attempt's end follows from its members' ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ugro.errors import SpecError
from ugro.execution.gang_end import gang_metadata, gang_outcome, process_ranks
from ugro.execution.rendezvous import gang_environment, master_port
from ugro.jobs.lifecycle import ExitReason
from ugro.jobs.spec import JobSpec, parse_spec
from ugro.registry.models import JobRow, MemberRow

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def _member(rank: int, reason: str, started: float, ended: float, **values: object) -> MemberRow:
    fields: dict[str, object] = {"pid": 100 + rank, **values}
    return MemberRow(
        job_id="j",
        attempt=1,
        rank=rank,
        node=f"n{rank}",
        address=f"198.18.0.{10 + rank}",
        host="h",
        gpu_indices="[0, 1]",
        claimed_at=T0,
        started_at=T0 + timedelta(seconds=started),
        ended_at=T0 + timedelta(seconds=ended),
        exit_reason=reason,
        **fields,
    )


def test_the_port_is_the_same_everywhere_for_an_attempt_and_moves_with_a_retry() -> None:
    ports = (29500, 29999)
    first = master_port("train-1a2b", 1, ports)
    assert first == master_port("train-1a2b", 1, ports)
    assert 29500 <= first <= 29999
    assert len({master_port("train-1a2b", n, ports) for n in range(1, 20)}) > 10
    assert master_port("x", 3, (40000, 40000)) == 40000


def test_every_member_gets_the_rendezvous_in_rank_order() -> None:
    env = gang_environment(2, 1, 4, ["198.18.0.11", "198.18.0.12"], 29600, "node")
    assert env == {
        "UGRO_NUM_NODES": "2",
        "UGRO_NODE_RANK": "1",
        "UGRO_GPUS_PER_NODE": "4",
        "UGRO_NODE_ADDRESSES": "198.18.0.11,198.18.0.12",
        "UGRO_LAUNCH": "node",
        "MASTER_ADDR": "198.18.0.11",
        "MASTER_PORT": "29600",
        "WORLD_SIZE": "8",
    }
    gang = JobSpec(name="g", command=["x"], nodes=2, gpus=4, launch="gpu")
    assert process_ranks(1, gang) == [4, 5, 6, 7]
    assert process_ranks(1, gang.model_copy(update={"launch": "node"})) == [1]


def test_a_gang_cannot_be_pinned_to_a_node_nor_launched_a_third_way() -> None:
    with pytest.raises(SpecError, match="cannot be pinned to node 'a'"):
        parse_spec({"name": "g", "command": ["x"], "nodes": 2, "node": "a"})
    with pytest.raises(SpecError, match="launch"):
        parse_spec({"name": "g", "command": ["x"], "launch": "rank"})
    with pytest.raises(SpecError, match="nodes"):
        parse_spec({"name": "g", "command": ["x"], "nodes": 0})


def test_the_attempt_ends_with_the_first_bad_end_and_lasts_its_longest_member() -> None:
    members = [
        _member(0, "stopped", 0, 9.5),
        _member(1, "oom", 1, 8, exit_code=1, error="CUDA out of memory"),
        _member(2, "error", 0, 9, exit_code=2),
    ]
    info = gang_outcome(members, 3)
    assert info.reason is ExitReason.OOM and info.code == 1
    assert info.error == "rank 1 on n1: CUDA out of memory"
    assert info.duration == 9.5 and not info.deterministic
    job = JobRow(id="j", name="j", attempt=1, node="n0")
    spec = JobSpec(name="j", command=["x"], nodes=3, gpus=2)
    top = gang_metadata(job, spec, members, info)
    assert top["duration_s"] == 9.5  # the longest member's wall time (rank 0's)
    assert top["exit_reason"] == "oom" and [m["rank"] for m in top["nodes"]] == [0, 1, 2]


def test_a_cancel_wins_every_member_ok_finishes_and_a_missing_member_is_lost() -> None:
    cancelled = [_member(0, "error", 0, 3), _member(1, "cancelled", 0, 5)]
    assert gang_outcome(cancelled, 2).reason is ExitReason.CANCELLED
    assert gang_outcome([_member(0, "ok", 0, 3), _member(1, "ok", 0, 4)], 2).reason == "ok"
    assert gang_outcome([_member(0, "stopped", 0, 3)], 2).reason is ExitReason.LOST
    not_started = [_member(0, "error", 0, 0, exit_code=127, pid=None), _member(1, "stopped", 0, 1)]
    assert gang_outcome(not_started, 2).deterministic
