"""The multi-host test bed (tests/hosts.py): hosts in network namespaces of their
own, each running `ugro worker`, sharing Redis and the registry over their links."""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest

from tests.conftest import processes_of, wait_until
from tests.hosts import SERVICES_ADDRESS, multi_host_bed, reaches
from ugro import Client, JobSpec
from ugro.settings import Settings

# What a job prints: its node, and its own address toward the services host (a
# UDP socket's connect sends nothing; it only picks the route).
WHERE = (
    "import os, socket\n"
    "probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    f"probe.connect(({SERVICES_ADDRESS!r}, 9))\n"
    "print(os.environ['UGRO_NODE'], probe.getsockname()[0])\n"
)


@pytest.mark.timeout(180)
def test_each_host_runs_its_jobs_from_its_own_address_and_a_pulled_cable_cuts_it_off(
    settings: Settings,
) -> None:
    with multi_host_bed(settings, hosts=2) as bed, Client(bed.settings) as client:
        # Given two hosts whose workers came up over their links
        def live() -> set[str]:
            return {w.node for w in client.rt.live.workers(max_age=bed.settings.worker_ttl)}

        nodes = {host.node for host in bed.hosts}
        wait_until(
            lambda: live() == nodes, 90, "both hosts' workers", lambda: bed.log(bed.hosts[0])
        )
        # When a job is pinned to each host
        jobs = [
            client.submit(
                JobSpec(name=host.node, node=host.node, command=[sys.executable, "-c", WHERE])
            )
            for host in bed.hosts
        ]
        done = client.wait([job.id for job in jobs], timeout=60)
        # Then each ran there, from that host's own address
        for job, host in zip(done, bed.hosts, strict=True):
            assert job.succeeded, bed.log(host)
            log = "".join(client.logs(job.id))
            assert log.split() == [host.node, host.address]
        # and Redis's password is in no file of the data dir, the hosts' logs
        # included, but the services host's own Redis config
        shown = [
            path
            for path in bed.base.data_dir.rglob("*")
            if path.is_file()
            and path.name != "redis.conf"
            and bed.password.encode() in path.read_bytes()
        ]
        assert shown == []
        # nor in any process's command line (the title `ps` shows)
        titles = []
        for proc in psutil.process_iter(["cmdline"]):
            titles.append(" ".join(proc.info["cmdline"] or []))
        assert not [title for title in titles if bed.password in title]
        # and a pulled cable cuts that host off, and only that host
        cut, other = bed.hosts
        bed.pull_cable(cut)
        assert not reaches(cut.netns, SERVICES_ADDRESS, bed.redis_port)
        assert reaches(other.netns, SERVICES_ADDRESS, bed.redis_port)
        bed.plug_cable(cut)
        assert reaches(cut.netns, SERVICES_ADDRESS, bed.redis_port)
    # Nothing of the bed is left: no namespace, no process
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert bed.tag not in namespaces
    assert processes_of(settings) == []
