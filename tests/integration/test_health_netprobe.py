"""The network probe, against a real OpenSSH server on loopback, and the cluster file."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sshd import (
    SshServer,
    fake_nvidia_smi,
    make_key,
    refusing_port,
    running_sshd,
    silent_port,
)
from ugro.errors import InventoryError
from ugro.health.cluster import ClusterNode, load_cluster
from ugro.health.netprobe import NetProbe, probe_nodes

pytestmark = pytest.mark.timeout(30)

TIMEOUT = 2.0


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def known_hosts(directory: Path, *lines: str) -> Path:
    path = directory / "known_hosts"
    path.write_text("".join(lines))
    return path


def node_of(server: SshServer, name: str = "gpu-a", gpu_query: bool = False) -> ClusterNode:
    return ClusterNode(name, server.host, server.port, key=server.client_key, gpu_query=gpu_query)


def probe_one(node: ClusterNode, known_hosts_file: Path, timeout: float = TIMEOUT) -> NetProbe:
    return probe_nodes([node], known_hosts_file, timeout)[node.name]


# Reaching a node -----------------------------------------------------------------


def test_a_node_whose_host_key_is_known_is_reachable_and_timed(
    sshd: SshServer, tmp_path: Path
) -> None:
    probe = probe_one(node_of(sshd), known_hosts(tmp_path, sshd.known_hosts_line()))

    assert probe.error is None
    assert probe.reachable
    assert probe.latency_ms is not None and 0 < probe.latency_ms < TIMEOUT * 1000
    assert probe.gpus is None  # not asked for


def test_a_host_key_other_than_the_known_one_is_refused(sshd: SshServer, tmp_path: Path) -> None:
    impostor = make_key(tmp_path / "impostor")
    known = known_hosts(tmp_path, f"[{sshd.host}]:{sshd.port} {impostor}\n")
    before = known.read_text()

    probe = probe_one(node_of(sshd), known)

    assert not probe.reachable and probe.latency_ms is None
    assert f"host key of {sshd.host}:{sshd.port} does not match {known}" in (probe.error or "")
    assert known.read_text() == before


def test_a_host_missing_from_known_hosts_is_refused_and_not_learned(
    sshd: SshServer, tmp_path: Path
) -> None:
    # The right key, but filed under port 22: OpenSSH files other ports as [host]:port.
    known = known_hosts(tmp_path, f"{sshd.host} {sshd.host_public_key}\n")

    probe = probe_one(node_of(sshd), known)

    assert not probe.reachable
    assert f"host key of {sshd.host}:{sshd.port} is not in {known}" in (probe.error or "")
    assert known.read_text() == f"{sshd.host} {sshd.host_public_key}\n"


def test_without_a_known_hosts_file_every_host_is_refused_and_none_is_written(
    sshd: SshServer, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-known_hosts"

    probe = probe_one(node_of(sshd), missing)

    assert not probe.reachable
    assert f"is not in {missing}, which does not exist" in (probe.error or "")
    assert not missing.exists()


def test_a_key_the_server_does_not_accept_is_a_refused_login(
    sshd: SshServer, tmp_path: Path
) -> None:
    make_key(tmp_path / "stranger")
    node = ClusterNode("gpu-a", sshd.host, sshd.port, key=tmp_path / "stranger")

    probe = probe_one(node, known_hosts(tmp_path, sshd.known_hosts_line()))

    assert not probe.reachable
    assert f"gpu-a ({sshd.host}:{sshd.port}) refused login" in (probe.error or "")


@pytest.mark.timeout(10)
def test_a_port_where_nothing_listens_fails_at_once(tmp_path: Path) -> None:
    with refusing_port() as port:
        started = time.monotonic()
        probe = probe_one(ClusterNode("dead", "127.0.0.1", port), known_hosts(tmp_path))
        elapsed = time.monotonic() - started

    assert not probe.reachable
    assert probe.error == f"cannot connect to dead (127.0.0.1:{port}): connection refused"
    assert elapsed < 1.0


@pytest.mark.timeout(10)
def test_a_port_that_accepts_but_never_speaks_fails_within_the_timeout(tmp_path: Path) -> None:
    with silent_port() as port:
        started = time.monotonic()
        probe = probe_one(ClusterNode("mute", "127.0.0.1", port), known_hosts(tmp_path), 1.0)
        elapsed = time.monotonic() - started

    assert not probe.reachable
    assert "accepted TCP but sent no SSH banner within 1 s" in (probe.error or "")
    assert 0.9 < elapsed < 2.5


@pytest.mark.timeout(30)
def test_a_hundred_nodes_with_five_dead_are_swept_in_a_few_seconds(
    sshd: SshServer, tmp_path: Path
) -> None:
    known = known_hosts(tmp_path, sshd.known_hosts_line())
    with silent_port() as silent, refusing_port() as refused:
        nodes = [node_of(sshd, f"node-{i:02d}") for i in range(95)]
        nodes += [ClusterNode(f"silent-{i}", "127.0.0.1", silent) for i in range(3)]
        nodes += [ClusterNode(f"refused-{i}", "127.0.0.1", refused) for i in range(2)]

        started = time.monotonic()
        probes = probe_nodes(nodes, known, TIMEOUT)
        elapsed = time.monotonic() - started

    assert list(probes) == [node.name for node in nodes]
    live = [probe for name, probe in probes.items() if name.startswith("node-")]
    assert all(p.reachable and p.error is None and p.latency_ms for p in live), [
        p.error for p in live if p.error
    ]
    dead = [probe for name, probe in probes.items() if not name.startswith("node-")]
    assert all(not p.reachable and p.error for p in dead)
    assert elapsed < 10.0, f"sweep took {elapsed:.1f} s"


# GPUs of nodes without an agent ---------------------------------------------------


@pytest.mark.timeout(20)
def test_nvidia_smi_is_read_on_nodes_that_ask_for_it(tmp_path: Path) -> None:
    path = fake_nvidia_smi(
        tmp_path / "bin",
        "0, 87, 30512, 81920, 71, 312.45\n1, 0, 3, 81920, 34, [N/A]\n",
    )
    with running_sshd(tmp_path / "sshd", path=path) as server:
        known = known_hosts(tmp_path, server.known_hosts_line())

        probe = probe_one(node_of(server, gpu_query=True), known)

    assert probe.error is None and probe.reachable
    assert probe.gpus == [
        {
            "index": 0,
            "utilization": 87.0,
            "memory_used_mb": 30512.0,
            "memory_total_mb": 81920.0,
            "temperature_c": 71.0,
            "power_w": 312.45,
        },
        {
            "index": 1,
            "utilization": 0.0,
            "memory_used_mb": 3.0,
            "memory_total_mb": 81920.0,
            "temperature_c": 34.0,
            "power_w": None,
        },
    ]


@pytest.mark.timeout(20)
def test_a_failing_nvidia_smi_is_reported_while_the_node_stays_reachable(
    tmp_path: Path,
) -> None:
    message = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n"
    path = fake_nvidia_smi(tmp_path / "bin", message, status=9)
    with running_sshd(tmp_path / "sshd", path=path) as server:
        known = known_hosts(tmp_path, server.known_hosts_line())

        probe = probe_one(node_of(server, gpu_query=True), known)

    assert probe.reachable and probe.latency_ms is not None
    assert probe.gpus is None
    assert probe.error == (
        "nvidia-smi on gpu-a exited with status 9: NVIDIA-SMI has failed because it"
        " couldn't communicate with the NVIDIA driver."
    )


# The cluster file ----------------------------------------------------------------


def test_a_cluster_file_lists_its_nodes_with_defaults(tmp_path: Path) -> None:
    cluster = tmp_path / "cluster.toml"
    cluster.write_text(
        "[[node]]\n"
        'name = "gpu-a"\n'
        'host = "10.0.0.5"\n'
        "\n"
        "[[node]]\n"
        'name = "gpu-b"\n'
        'host = "gpu-b.lab"\n'
        "port = 2222\n"
        'user = "lab"\n'
        'key = "keys/id_ed25519"\n'
        "gpu_query = true\n"
    )

    assert load_cluster(cluster) == [
        ClusterNode("gpu-a", "10.0.0.5"),
        ClusterNode("gpu-b", "gpu-b.lab", 2222, "lab", tmp_path / "keys/id_ed25519", True),
    ]


GOOD = '[[node]]\nname = "gpu-a"\nhost = "10.0.0.5"\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[[node]\nname = 'x'\n", "not valid TOML"),
        (GOOD + "hots = 'typo'\n", "node #1 ('gpu-a'): unknown key 'hots'"),
        ("[[nodes]]\nname = 'gpu-a'\n", "unknown top-level key 'nodes'"),
        ('[[node]]\nname = "gpu-a"\n', "node #1 ('gpu-a'): missing 'host'"),
        ('[[node]]\nhost = "10.0.0.5"\n', "node #1: missing 'name'"),
        (GOOD + GOOD, "node #2: duplicate name 'gpu-a' (already node #1)"),
        (GOOD + "port = 0\n", "port must be an integer from 1 to 65535, not 0"),
        (GOOD + "port = 70000\n", "port must be an integer from 1 to 65535, not 70000"),
        (GOOD + 'port = "22"\n', "port must be an integer from 1 to 65535, not '22'"),
        (GOOD + "gpu_query = 'yes'\n", "gpu_query must be true or false, not 'yes'"),
        ('[[node]]\nname = "gpu-a"\nhost = ""\n', "host must be a non-empty string"),
        ('[[node]]\nname = "gpu a"\nhost = "h"\n', "name 'gpu a' may only hold letters"),
    ],
)
def test_a_bad_cluster_file_is_refused_naming_the_file_the_entry_and_the_fault(
    tmp_path: Path, text: str, expected: str
) -> None:
    cluster = tmp_path / "cluster.toml"
    cluster.write_text(text)

    with pytest.raises(InventoryError) as caught:
        load_cluster(cluster)

    assert str(caught.value).startswith(f"cluster file {cluster}")
    assert expected in str(caught.value)


def test_a_missing_cluster_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="cannot read it"):
        load_cluster(tmp_path / "absent.toml")
