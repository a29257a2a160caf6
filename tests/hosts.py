"""The multi-host test bed: hosts that really are apart, on this one machine.

Each "host" is a network namespace with its own address on a veth link to a
bridge in the test's own namespace, which stands for the lab's services host: a
Redis server with a password listens on the bridge's address, and so does a
forwarder to the PostgreSQL server when one runs here (SQLite on the shared
filesystem otherwise). Every host runs `ugro worker` (its GPU workers and node
agent) under its own ``UGRO_NODE_NAME``, with fake GPUs, and all share one data
dir, as a lab's nodes share NFS. ``pull_cable`` is ``ip link set ... down`` on a
host's link; ``restart_redis`` restarts the services host's Redis, which keeps an
append-only file when the bed is made with ``appendonly``.

Addresses come from 198.18.0.0/15 (reserved for benchmarking networks): nothing
is sent to any address but these and loopback. Everything is torn down, the
namespaces included, however the test ends.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from tests.conftest import BIN, env_for
from ugro.ops.redis_server import redis_executable
from ugro.settings import Settings

#: The services host's address on the bed's bridge; host n is SUBNET.(10 + n).
#: Each of pytest-xdist's workers has a subnet of its own, so beds run side by side.
SUBNET = f"198.18.{int(os.environ.get('PYTEST_XDIST_WORKER', 'gw0').removeprefix('gw'))}"
SERVICES_ADDRESS = f"{SUBNET}.1"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def in_netns(netns: str, argv: list[str]) -> list[str]:
    """``argv`` run inside the network namespace ``netns``."""
    return ["ip", "netns", "exec", netns, *argv]


@dataclass
class Host:
    """One host of the bed: its node name, namespace, address and link."""

    node: str
    netns: str
    address: str
    link: str  # the link's end on the bridge: down is a pulled cable
    worker: subprocess.Popen[bytes] | None = field(default=None, repr=False)


class _Forwarder:
    """TCP from ``listen`` to ``target``, one thread pair per connection: how the
    hosts reach a PostgreSQL server that listens on loopback only."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(listen)
        self.server.settimeout(0.2)
        self.address = self.server.getsockname()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        with client, socket.create_connection(self.target, timeout=5) as upstream:
            ends = {client: upstream, upstream: client}
            while not self.stop.is_set():
                ready, _, _ = select.select(list(ends), [], [], 0.2)
                for end in ready:
                    try:
                        data = end.recv(65536)
                        if data:
                            ends[end].sendall(data)
                    except OSError:  # a side reset (a host's cable pulled, say)
                        data = b""
                    if not data:
                        return

    def close(self) -> None:
        self.stop.set()
        self.server.close()
        self.thread.join(timeout=2)


class TestBed:
    """``hosts`` hosts, their services and their workers (use as a context manager)."""

    __test__ = False  # not a test class, whatever its name

    def __init__(
        self,
        settings: Settings,
        hosts: int = 2,
        gpus: int = 2,
        beat: bool = False,
        appendonly: bool = False,
    ) -> None:
        self.tag = secrets.token_hex(2)
        self.bridge = f"ub{self.tag}"
        self.password = secrets.token_hex(12)
        self.base = settings
        self.gpus = gpus
        self.hosts = [
            Host(
                node=f"host{n}",
                netns=f"ugro-{self.tag}-h{n}",
                address=f"{SUBNET}.{10 + n}",
                link=f"uv{self.tag}{n}",
            )
            for n in range(hosts)
        ]
        self.redis: subprocess.Popen[bytes] | None = None
        self.redis_port = 0
        # Redis keeps an append-only file, as a deployment's does, so that
        # ``restart_redis`` brings its keys back
        self.appendonly = appendonly
        self.forwarder: _Forwarder | None = None
        self.settings = settings
        # Beat on the services host (the reconciler's ticks, the safety-net dispatch)
        self.with_beat = beat
        self.beat: subprocess.Popen[bytes] | None = None

    # The network ------------------------------------------------------------------

    def _network_up(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{SERVICES_ADDRESS}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for n, host in enumerate(self.hosts):
            inside = f"ue{self.tag}{n}"
            _ip("netns", "add", host.netns)
            _ip("link", "add", host.link, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", host.netns)
            _ip("link", "set", host.link, "master", self.bridge)
            _ip("link", "set", host.link, "up")
            _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", inside)
            _ip("-n", host.netns, "link", "set", inside, "up")
            _ip("-n", host.netns, "link", "set", "lo", "up")

    def _network_down(self) -> None:
        for host in self.hosts:
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("netns", "delete", host.netns)  # its veth end goes, and the pair with it
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("link", "delete", host.link)
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "delete", self.bridge)

    def pull_cable(self, host: Host) -> None:
        _ip("link", "set", host.link, "down")

    def plug_cable(self, host: Host) -> None:
        _ip("link", "set", host.link, "up")

    # The services host --------------------------------------------------------------

    def _services_up(self) -> None:
        port = self.redis_port = _free_port(SERVICES_ADDRESS)
        run = self.base.data_dir / "bed"
        run.mkdir(parents=True, exist_ok=True)
        conf = run / "redis.conf"
        kept = "yes\nappendfsync everysec" if self.appendonly else "no"
        # The password in a file, not on a command line anyone can read.
        conf.write_text(
            f"bind {SERVICES_ADDRESS}\nport {port}\nrequirepass {self.password}\n"
            f'save ""\nappendonly {kept}\ndir {run}\nlogfile {run / "redis.log"}\n'
        )
        conf.chmod(0o600)
        self._start_redis()
        url = f"redis://:{self.password}@{SERVICES_ADDRESS}:{port}/0"
        database = self.base.effective_database_url
        if database.startswith("postgresql"):
            parts = urlsplit(database)
            target = (parts.hostname or "127.0.0.1", parts.port or 5432)
            self.forwarder = _Forwarder((SERVICES_ADDRESS, 0), target)
            netloc = f"{parts.username}@{SERVICES_ADDRESS}:{self.forwarder.address[1]}"
            database = urlunsplit(parts._replace(netloc=netloc))
        self.settings = self.base.model_copy(
            update={
                "redis_url": url,
                "database_url": database,
                "gpu_backend": f"fake:{self.gpus}",
                "redis_prefix": "ugro",
            }
        )

    def _start_redis(self) -> None:
        conf = self.base.data_dir / "bed" / "redis.conf"
        self.redis = subprocess.Popen([redis_executable(), str(conf)], start_new_session=True)
        _wait_for_port(SERVICES_ADDRESS, self.redis_port, self.redis)

    def restart_redis(self, down: float = 0.0) -> None:
        """Restart the services host's Redis as a service manager would: SIGTERM
        (a clean shutdown writes the append-only file out), ``down`` seconds, start."""
        if self.redis is not None:
            self.redis.terminate()
            self.redis.wait(timeout=20)
        time.sleep(down)
        self._start_redis()

    def settings_of(self, host: Host) -> Settings:
        return self.settings.model_copy(update={"node_name": host.node})

    # The hosts' workers ---------------------------------------------------------------

    def _workers_up(self) -> None:
        logs = self.base.data_dir / "bed"
        if self.with_beat:
            env = env_for(self.settings.model_copy(update={"node_name": "services"}))
            with (logs / "beat.log").open("ab") as log:
                self.beat = subprocess.Popen(
                    [str(BIN / "ugro"), "beat"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        for host in self.hosts:
            env = env_for(self.settings_of(host))
            with (logs / f"{host.node}.log").open("ab") as log:
                host.worker = subprocess.Popen(
                    in_netns(host.netns, [str(BIN / "ugro"), "worker"]),
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )

    def _workers_down(self) -> None:
        running = [host.worker for host in self.hosts] + [self.beat]
        processes = [p for p in running if p is not None]
        for process in processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)

    def log(self, host: Host) -> str:
        path = self.base.data_dir / "bed" / f"{host.node}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    # Whole ------------------------------------------------------------------------------

    def __enter__(self) -> TestBed:
        try:
            self._network_up()
            self._services_up()
            self._workers_up()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        try:
            self._workers_down()
        finally:
            if self.redis is not None:
                self.redis.terminate()
                self.redis.wait(timeout=10)
            if self.forwarder is not None:
                self.forwarder.close()
            self._network_down()


def _free_port(address: str) -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_for_port(address: str, port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(OSError), socket.create_connection((address, port), 0.2):
            return
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the bed's Redis did not start on {address}:{port}")
        time.sleep(0.05)


@contextlib.contextmanager
def multi_host_bed(
    settings: Settings,
    hosts: int = 2,
    gpus: int = 2,
    beat: bool = False,
    appendonly: bool = False,
) -> Iterator[TestBed]:
    """``TestBed`` as a context manager: the hosts, up, and torn down after."""
    with TestBed(settings, hosts, gpus, beat, appendonly) as bed:
        yield bed


def reaches(netns: str, address: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a TCP connection from inside ``netns`` to ``address:port`` opens."""
    probe = (
        "import socket, sys\n"
        "try:\n"
        f"    socket.create_connection(({address!r}, {port}), {timeout}).close()\n"
        "except OSError:\n"
        "    sys.exit(1)\n"
    )
    python = str(BIN / "python")
    done = subprocess.run(in_netns(netns, [python, "-c", probe]), check=False, timeout=30)
    return done.returncode == 0
