"""What `ugro list`, `status` and `logs` show of a gang job: its nodes, each member,
each rank's log. A real registry and tree, written as the workers leave them; the
commands read only those, so no worker or Redis is needed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from sqlalchemy import Table, insert

from tests.conftest import ugro
from ugro.jobs.lifecycle import JobStatus
from ugro.jobs.paths import JobPaths
from ugro.jobs.spec import JobSpec
from ugro.registry.models import MemberRow
from ugro.registry.store import Registry
from ugro.scheduling.submit import queued_row
from ugro.settings import Settings

# The gang: two nodes, two GPUs on each, one process a GPU (ranks 0-3); host1 runs
# ranks 0 and 1, host2 ranks 2 and 3.
GANG = [("host1", "198.18.0.11", [0, 1]), ("host2", "198.18.0.12", [2, 3])]


@dataclass
class Jobs:
    gang: str
    single: str
    queued_gang: str


def _running(
    job_id: str, spec: JobSpec, now: datetime, node: str, gpus: list[int]
) -> dict[str, Any]:
    """A job's registry row as it is while its first attempt runs on ``node``."""
    return queued_row(job_id, spec, now) | {
        "status": JobStatus.RUNNING.value,
        "attempt": 1,
        "node": node,
        "gpu_indices": json.dumps(gpus),
        "placed_at": now,
        "started_at": now,
        "members": None,
    }


def _rank_text(rank: int) -> str:
    return f"rank {rank} says hello\n"


@pytest.fixture
def jobs(settings: Settings) -> Jobs:
    """A gang job running on host1 and host2 (host1's member started, host2's only
    claimed), a one-node job running on testnode's GPU 2, and a gang job queued."""
    now = datetime.now(UTC) - timedelta(minutes=5)
    gang_spec = JobSpec(name="gang", command=["python", "train.py"], nodes=2, gpus=2, launch="gpu")
    single_spec = JobSpec(name="single", command=["python", "train.py"])
    gang_id, single_id, queued_id = "gang-0000aaaa", "single-0000bbbb", "gang-0000cccc"
    gang_row = _running(gang_id, gang_spec, now, "host1", [0, 1])
    gang_row["members"] = json.dumps([[node, gpus] for node, _, gpus in GANG])
    members = [
        {
            "job_id": gang_id,
            "attempt": 1,
            "rank": rank,
            "node": node,
            "address": address,
            "host": f"{node}.lab",
            "gpu_indices": json.dumps(gpus),
            "claimed_at": now,
            "pid": 4242 if rank == 0 else None,
            "started_at": now if rank == 0 else None,
        }
        for rank, (node, address, gpus) in enumerate(GANG)
    ]
    registry = Registry(settings.effective_database_url)
    try:
        registry.create_jobs([gang_row, _running(single_id, single_spec, now, "testnode", [2])])
        registry.create_jobs([queued_row(queued_id, gang_spec, now)])
        with registry.connections.begin() as conn:
            conn.execute(insert(cast(Table, MemberRow.__table__)), members)
    finally:
        registry.close()

    # the trees, as the workers leave them: each member's rank logs, linked under
    # logs/ and under its node's folder
    gang = JobPaths(settings.jobs_dir, gang_id)
    gang.create({"name": "gang"})
    for node_rank, (node, _, _) in enumerate(GANG):
        ranks = [node_rank * 2, node_rank * 2 + 1]
        for path, rank in zip(gang.start_rank_logs(1, ranks), ranks, strict=True):
            path.write_text(_rank_text(rank), encoding="utf-8")
        gang.name_rank_logs(1, ranks, node)
    single = JobPaths(settings.jobs_dir, single_id)
    single.create({"name": "single"})
    single.start_attempt_logs(1).write_text("single says hello\n", encoding="utf-8")
    single.name_attempt_logs(1)
    return Jobs(gang_id, single_id, queued_id)


def _row_of(listing: str, job_id: str) -> list[str]:
    return next(cells for line in listing.splitlines() if (cells := line.split())[:1] == [job_id])


@pytest.mark.timeout(60)
def test_list_shows_a_gang_jobs_nodes_and_shape(settings: Settings, jobs: Jobs) -> None:
    # when the jobs are listed
    listed = ugro(settings, "list")
    assert listed.returncode == 0, listed.stderr
    # then the gang job shows all its nodes and nodes x GPUs; the one-node job its
    # node and GPU index, as ever
    assert _row_of(listed.stdout, jobs.gang)[2:5] == ["running", "host1+host2", "2x2"]
    assert _row_of(listed.stdout, jobs.single)[2:5] == ["running", "testnode", "2"]
    # and a gang job not placed yet, what it wants
    assert _row_of(listed.stdout, jobs.queued_gang)[2:5] == ["queued", "-", "(2x2)"]
    # and scripts see the same in JSON
    as_json = ugro(settings, "list", "--json")
    assert as_json.returncode == 0, as_json.stderr
    by_id = {job["id"]: job for job in json.loads(as_json.stdout)}
    assert by_id[jobs.gang]["num_nodes"] == 2
    assert by_id[jobs.gang]["nodes"] == ["host1", "host2"]
    assert by_id[jobs.gang]["node"] == "host1"
    assert by_id[jobs.single]["num_nodes"] == 1
    assert by_id[jobs.single]["nodes"] == ["testnode"]


@pytest.mark.timeout(60)
def test_status_shows_each_member_of_a_gang_job(settings: Settings, jobs: Jobs) -> None:
    # when the gang job is looked at
    shown = ugro(settings, "status", jobs.gang)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    # then each member is a line, in rank order: node, rank, address, GPUs, state
    start = next(i for i, line in enumerate(lines) if line.startswith("nodes "))
    assert lines[start] == "nodes        host1 rank 0 (198.18.0.11) GPUs 0,1 running"
    assert lines[start + 1] == "             host2 rank 1 (198.18.0.12) GPUs 2,3 waiting"
    assert "gpus         2 on each of 2 nodes" in lines
    # and the JSON names the members too
    as_json = json.loads(ugro(settings, "status", jobs.gang, "--json").stdout)
    assert [(m["node"], m["state"]) for m in as_json["members"]] == [
        ("host1", "running"),
        ("host2", "waiting"),
    ]
    # while a one-node job still shows its one node
    single = ugro(settings, "status", jobs.single)
    assert single.returncode == 0, single.stderr
    assert "node         testnode" in single.stdout
    assert "nodes" not in single.stdout


@pytest.mark.timeout(60)
def test_logs_reads_a_rank_or_a_node(settings: Settings, jobs: Jobs) -> None:
    # a rank's log, the newest attempt's or a given one's
    for args in (["--rank", "3"], ["--rank", "3", "--attempt", "1"]):
        rank = ugro(settings, "logs", jobs.gang, *args)
        assert rank.returncode == 0, rank.stderr
        assert rank.stdout == _rank_text(3)
    # a node's member's first rank
    node = ugro(settings, "logs", jobs.gang, "--node", "host2")
    assert node.returncode == 0, node.stderr
    assert node.stdout == _rank_text(2)
    # and without either, rank 0's training log, as ever
    assert ugro(settings, "logs", jobs.gang).stdout == _rank_text(0)
    assert ugro(settings, "logs", jobs.single, "--rank", "0").stdout == "single says hello\n"


@pytest.mark.timeout(60)
def test_logs_refuses_a_rank_or_node_the_job_does_not_have(settings: Settings, jobs: Jobs) -> None:
    cases = [
        ((jobs.gang, "--rank", "9"), f"rank: job {jobs.gang} has ranks 0-3"),
        ((jobs.gang, "--node", "nowhere"), f"node: job {jobs.gang} ran on host1, host2"),
        ((jobs.gang, "--rank", "1", "--node", "host1"), "rank, node"),
        ((jobs.single, "--rank", "1"), f"rank: job {jobs.single} has only rank 0"),
    ]
    for args, message in cases:
        result = ugro(settings, "logs", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert result.stdout == ""
