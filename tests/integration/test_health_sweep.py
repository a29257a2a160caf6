"""The health sweep: SSH-probed nodes from the cluster file (a real sshd on
loopback and dead ports), the adaptive interval, bounded samples, and critical
alerts delivered to a notification URL."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import pytest
import redis

from tests.conftest import make_settings, running_stack, ugro, wait_until
from tests.sshd import SshServer, free_port, running_sshd
from ugro.gpus.fake import FakeBackend
from ugro.health.readings import publish_reading, read_node
from ugro.health.samples import NodeSample, add_sample, add_samples, samples
from ugro.health.sweep import health_sweep
from ugro.registry.store import Registry
from ugro.runtime import Runtime
from ugro.settings import Settings


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def write_cluster(path: Path, server: SshServer, good: int, dead: int) -> Path:
    entries = []
    for i in range(good):
        entries.append(
            f'[[node]]\nname = "ssh{i}"\nhost = "{server.host}"\nport = {server.port}\n'
            f'user = "{server.user}"\nkey = "{server.client_key}"\n'
        )
    for i in range(dead):
        entries.append(f'[[node]]\nname = "dead{i}"\nhost = "127.0.0.1"\nport = {free_port()}\n')
    path.write_text("\n".join(entries))
    (path.parent / "known_hosts").write_text(server.known_hosts_line())
    return path


@pytest.fixture
def rt(settings: Settings, live_redis: redis.Redis) -> Iterator[Runtime]:
    runtime = Runtime.open(settings)
    yield runtime
    runtime.close()


def _with(rt: Runtime, **changes: object) -> Runtime:
    rt.settings = rt.settings.model_copy(update=changes)
    return rt


@pytest.mark.timeout(60)
def test_probed_nodes_are_scored_and_dead_ones_open_their_breaker_within_seconds(
    rt: Runtime, sshd: SshServer, tmp_path: Path
) -> None:
    cluster = write_cluster(tmp_path / "cluster.toml", sshd, good=25, dead=5)
    _with(rt, cluster_file=cluster, known_hosts=tmp_path / "known_hosts", ssh_timeout=2.0)
    reports = [health_sweep(rt, force=True) for _ in range(3)]
    for report in reports:
        assert report is not None and report.duration < 10, report and report.duration
    last = reports[-1]
    assert last is not None and len(last.nodes) == 30
    reachable = last.nodes["ssh0"]
    assert reachable.reachable and reachable.latency_ms is not None
    assert reachable.level == "WARNING"  # answers, but no ugro agent runs there
    assert reachable.breaker == "closed"
    dead = last.nodes["dead0"]
    assert (dead.level, dead.breaker, dead.reachable) == ("CRITICAL", "open", False)
    assert dead.reasons[0].startswith("unreachable: ")
    unhealthy = rt.live.redis.hgetall(rt.live.keys.unhealthy_nodes)
    assert sorted(unhealthy) == [f"dead{i}" for i in range(5)]
    opened = [e for e in rt.registry.events() if e.kind == "breaker_open"]
    assert sorted(e.node or "" for e in opened) == [f"dead{i}" for i in range(5)]
    assert len(samples(rt.registry, datetime.now(UTC) - timedelta(minutes=1))) == 90
    # `ugro nodes` says when an open breaker's window ends, not only that it is open.
    shown = ugro(rt.settings, "nodes", "--json")
    assert shown.returncode == 0, shown.stderr
    rows = {entry["node"]: entry for entry in json.loads(shown.stdout)}
    assert (rows["dead0"]["breaker"], rows["ssh0"]["breaker"]) == ("open", "closed")
    ends = datetime.fromisoformat(rows["dead0"]["breaker_open_until"])
    left = (ends - datetime.now(UTC)).total_seconds()
    assert rt.settings.breaker_open_seconds - 60 < left <= rt.settings.breaker_open_seconds
    assert rows["ssh0"]["breaker_open_until"] is None
    table = ugro(rt.settings, "nodes")
    assert "open, 5m left" in table.stdout or "open, 4m left" in table.stdout, table.stdout


@pytest.mark.timeout(30)
def test_an_unknown_host_key_fails_the_probe_and_is_never_accepted(
    rt: Runtime, sshd: SshServer, tmp_path: Path
) -> None:
    cluster = write_cluster(tmp_path / "cluster.toml", sshd, good=1, dead=0)
    known = tmp_path / "known_hosts"
    known.write_text("")
    _with(rt, cluster_file=cluster, known_hosts=known)
    report = health_sweep(rt, force=True)
    assert report is not None
    sample = report.nodes["ssh0"]
    assert sample.level == "CRITICAL" and not sample.reachable
    assert "not in" in sample.reasons[0] and str(known) in sample.reasons[0]
    assert known.read_text() == ""


@pytest.mark.timeout(30)
def test_the_interval_grows_while_calm_and_drops_when_jobs_run(rt: Runtime) -> None:
    _with(
        rt,
        health_min_interval=1.0,
        health_max_interval=4.0,
        cpu_warning_percent=101.0,
        memory_warning_percent=100.0,
        disk_warning_percent=100.0,
    )
    backend = FakeBackend(2, None, rt.settings.node_name, rt.settings.jobs_dir)
    intervals = []
    for _ in range(5):
        publish_reading(rt, read_node(rt, backend))
        report = health_sweep(rt, force=True)
        assert report is not None
        intervals.append(report.interval)
    assert intervals == [1.5, 2.25, 3.375, 4.0, 4.0]
    # A sweep asked for before the interval is up does not run.
    rt.live.redis.delete(rt.live.keys.health_gate)
    assert health_sweep(rt) is not None
    assert health_sweep(rt) is None
    # A job holding a GPU brings the interval back to the shortest.
    assert rt.live.leases.acquire(rt.settings.node_name, [1], "job-x|t", 30.0)
    publish_reading(rt, read_node(rt, backend))
    report = health_sweep(rt, force=True)
    assert report is not None and report.interval == 1.0
    [sample] = report.nodes.values()
    assert [gpu.busy for gpu in sample.gpus] == [False, True]


@pytest.mark.timeout(30)
def test_samples_older_than_the_retention_are_pruned(rt: Runtime) -> None:
    old = NodeSample("n", datetime.now(UTC) - timedelta(days=9), 100, "INFO", "closed", True)
    add_sample(rt.registry, old)
    publish_reading(
        rt, read_node(rt, FakeBackend(1, None, rt.settings.node_name, rt.settings.jobs_dir))
    )
    assert health_sweep(rt, force=True) is not None
    kept = samples(rt.registry, datetime.now(UTC) - timedelta(days=30))
    assert [s.node for s in kept] == [rt.settings.node_name]


def _every_5s(node: str, start: datetime, count: int, critical_at: int = -1) -> list[NodeSample]:
    return [
        NodeSample(
            node,
            start + timedelta(seconds=5 * i),
            20 if i == critical_at else 100,
            "CRITICAL" if i == critical_at else "INFO",
            "closed",
            True,
        )
        for i in range(count)
    ]


@pytest.mark.timeout(30)
def test_samples_older_than_a_day_are_thinned_to_the_worst_of_each_minute(rt: Runtime) -> None:
    now = datetime.now(UTC)
    two_days_ago = datetime.fromtimestamp((now - timedelta(days=2)).timestamp() // 60 * 60, UTC)
    old = _every_5s("a", two_days_ago, 36, critical_at=17) + _every_5s("b", two_days_ago, 36)
    recent = _every_5s("a", now - timedelta(hours=1), 24)
    add_samples(rt.registry, old + recent)
    publish_reading(
        rt, read_node(rt, FakeBackend(1, None, rt.settings.node_name, rt.settings.jobs_dir))
    )
    assert health_sweep(rt, force=True) is not None

    def stored(node: str, since: datetime, until: datetime) -> list[NodeSample]:
        return samples(rt.registry, since, until, node=node)

    day_ago = now - timedelta(days=1)
    thinned_a = stored("a", two_days_ago, day_ago)
    assert [s.at for s in thinned_a] == [
        two_days_ago,
        two_days_ago + timedelta(seconds=85),  # minute 2's CRITICAL, not its first
        two_days_ago + timedelta(seconds=120),
    ]
    assert [s.level for s in thinned_a] == ["INFO", "CRITICAL", "INFO"]
    assert len(stored("b", two_days_ago, day_ago)) == 3
    assert len(stored("a", day_ago, now)) == 24  # the last day keeps every sample
    # Thinning again (the next hour's pass) deletes nothing more.
    rt.live.redis.delete(rt.live.keys.health_prune, rt.live.keys.health_thinned)
    assert health_sweep(rt, force=True) is not None
    assert len(stored("a", two_days_ago, day_ago)) == 3


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, object]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        self.received.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.mark.timeout(120)
def test_a_critical_node_is_alerted_to_the_notify_urls(
    tmp_path: Path, database_url: str, sshd: SshServer
) -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cluster = write_cluster(tmp_path / "cluster.toml", sshd, good=1, dead=1)
    settings = make_settings(
        tmp_path / "data",
        database_url,
        gpu_backend="fake:1",
        cluster_file=cluster,
        known_hosts=tmp_path / "known_hosts",
        health_min_interval=0.5,
        notify_urls=f"json://127.0.0.1:{server.server_port}/alerts",
    )
    try:
        with running_stack(settings):
            wait_until(lambda: _Receiver.received, 60, "the alert to arrive")
            alert = _Receiver.received[0]
            assert "dead0" in str(alert["title"]) and "CRITICAL" in str(alert["title"])
            assert "unreachable" in str(alert["message"])
            shown = ugro(settings, "nodes")
            assert shown.returncode == 0, shown.stderr
            assert "dead0" in shown.stdout and "ssh0" in shown.stdout
            assert "unreachable" in shown.stdout
    finally:
        server.shutdown()
    registry = Registry(settings.effective_database_url)
    kinds = {(e.kind, e.node) for e in registry.events()}
    registry.close()
    assert ("health_critical", "dead0") in kinds


@pytest.mark.timeout(30)
def test_a_running_job_whose_process_is_gone_is_reported_on_the_second_reading(
    rt: Runtime,
) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()  # reaped: its pid names no process now
    now = datetime.now(UTC)
    node = rt.settings.node_name
    rt.registry.create_job(
        id="vanished-1",
        name="vanished",
        kind="train",
        status="running",
        priority=0,
        gpus=1,
        node=node,
        gpu_indices="[0]",
        attempt=1,
        max_retries=0,
        spec="{}",
        created_at=now,
    )
    rt.registry.start_attempt(
        job_id="vanished-1",
        number=1,
        node=node,
        host="h",
        gpu_indices="[0]",
        pid=gone.pid,
        started_at=now,
    )
    backend = FakeBackend(1, None, node, rt.settings.jobs_dir)
    suspects: set[str] = set()
    first = read_node(rt, backend, suspects)
    assert first.processes_missing == [] and first.processes_expected == 1
    second = read_node(rt, backend, suspects)
    assert second.processes_missing == [f"job vanished-1 (GPUs [0]): process {gone.pid} is gone"]
    publish_reading(rt, second)
    report = health_sweep(rt, force=True)
    assert report is not None
    sample = report.nodes[node]
    assert sample.level == "WARNING" and sample.reasons[-1] == second.processes_missing[0]
