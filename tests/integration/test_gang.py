"""Gang jobs on the multi-host bed (tests/hosts.py): jobs across hosts that really
are apart, their rendezvous, their failures, their tree."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import make_settings, registry_database, wait_until
from tests.hosts import TestBed, multi_host_bed
from ugro import Client, JobSpec
from ugro.jobs.lifecycle import JobStatus

ALLREDUCE = str(Path(__file__).parents[1] / "jobs" / "allreduce.py")


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestBed]:
    """Three hosts of two GPUs each, beat on the services host; one for the module:
    each test leaves its jobs ended."""
    where = tmp_path_factory.mktemp("gang")
    with registry_database(where) as database:
        settings = make_settings(
            where / "data", database, gang_start_timeout=20.0, placement_ttl=30.0, worker_ttl=10.0
        )
        with multi_host_bed(settings, hosts=3, gpus=2, beat=True) as bed:
            with Client(bed.settings) as client:
                nodes = {host.node for host in bed.hosts}
                wait_until(
                    lambda: (
                        {w.node for w in client.rt.live.workers(bed.settings.worker_ttl)} == nodes
                    ),
                    90,
                    "every host's workers",
                    lambda: bed.log(bed.hosts[0]),
                )
            yield bed


def _logs(bed: TestBed) -> str:
    return "\n".join(f"--- {host.node}\n{bed.log(host)}" for host in bed.hosts)


def _member_processes(job_id: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["environ"]):
        try:
            if (proc.info["environ"] or {}).get("UGRO_JOB_ID") == job_id:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.mark.timeout(180)
def test_a_two_node_job_of_two_gpus_each_meets_across_hosts_and_all_reduces(
    bed: TestBed,
) -> None:
    with Client(bed.settings) as client:
        spec = JobSpec(
            name="allreduce",
            nodes=2,
            gpus=2,
            launch="gpu",
            command=[sys.executable, ALLREDUCE, "--timeout", "30"],
        )
        job = client.submit(spec)
        done = client.wait([job.id], timeout=120)[0]
        assert done.status is JobStatus.FINISHED, (done, _logs(bed))
        out = done.job_dir / "allreduce"
        results = [json.loads((out / f"rank_{r}.json").read_text()) for r in range(4)]
        # Then every rank met at rank 0's address and summed 0 + 1 + 2 + 3
        assert {r["sum"] for r in results} == {6}
        addresses = {host.node: host.address for host in bed.hosts}
        node_of = {r["rank"]: r["UGRO_NODE"] for r in results}
        assert node_of[0] == node_of[1] != node_of[2] == node_of[3]
        for r in results:
            assert r["MASTER_ADDR"] == addresses[node_of[0]]
            assert r["hostname_address"] == addresses[r["UGRO_NODE"]]
            assert r["WORLD_SIZE"] == "4" and r["LOCAL_WORLD_SIZE"] == "2"
            assert r["LOCAL_RANK"] == str(r["rank"] % 2)
        print(_logs(bed))
