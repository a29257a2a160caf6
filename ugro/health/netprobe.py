"""Network probe: reach the nodes of the cluster file over SSH and time them.

The nodes come from the cluster file (``ugro.health.cluster``). A probe logs in, times a
``true`` run over the connection and, for ``gpu_query`` nodes (nodes without an
ugro agent), reads their GPUs with ``nvidia-smi``.

Host keys are checked against a known_hosts file and never learned: an unknown or
changed key fails the probe, since trusting it on first sight would let anyone on
the path answer for a node. Every step (TCP connect, banner and key exchange,
authentication, each command) is bounded by the timeout, and the nodes are probed
concurrently, so a few dead nodes cost one timeout, not one each.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import paramiko

from ugro.health.cluster import ClusterNode

# Fixed command lines: nothing from the cluster file or a user goes into them.
_LATENCY_COMMAND = "true"
_GPU_COMMAND = (
    "nvidia-smi --query-gpu=index,utilization.gpu,memory.used,memory.total,"
    "temperature.gpu,power.draw --format=csv,noheader,nounits"
)
# Names of the fields of _GPU_COMMAND's lines, as ugro.gpus.base.GpuInfo names them.
_GPU_FIELDS = (
    "index",
    "utilization",
    "memory_used_mb",
    "memory_total_mb",
    "temperature_c",
    "power_w",
)
# How much of a failing command's output an error message quotes.
_MAX_QUOTED = 200
# paramiko logs each failed handshake from its transport thread, with a traceback,
# at ERROR; the probe reports the same failure in NetProbe.error. Its messages go
# to this logger, which passes only CRITICAL unless someone lowers its level (to
# DEBUG, say, to follow an SSH conversation).
_SSH_LOG = "ugro.health.netprobe.ssh"
logging.getLogger(_SSH_LOG).setLevel(logging.CRITICAL)


@dataclass(frozen=True)
class NetProbe:
    """What one probe of one node found."""

    node: str
    # Logged in over SSH (its commands may still have failed: see error).
    reachable: bool
    # Running ``true`` over the established connection, from the exec request to
    # its exit status: a round trip plus the remote shell's start.
    latency_ms: float | None
    error: str | None
    # One dict per GPU, keyed like ugro.gpus.base.GpuInfo; None unless gpu_query.
    gpus: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Probing ------------------------------------------------------------------------


def probe_nodes(
    nodes: Sequence[ClusterNode],
    known_hosts: Path,
    timeout: float,
    max_workers: int = 32,
) -> dict[str, NetProbe]:
    """Probe every node over SSH, concurrently; never raises for a node's failure.

    Args:
        nodes: the nodes to probe (names must be unique).
        known_hosts: an OpenSSH known_hosts file; a node whose host key is not in it,
            or differs from it, fails its probe. The file is only read.
        timeout: seconds allowed to each step of a probe: TCP connect, SSH banner
            and key exchange, authentication, and each command.
        max_workers: how many nodes are probed at once.

    Returns:
        One NetProbe per node, keyed by node name, in the order given.

    Raises:
        ValueError: two nodes share a name, or timeout or max_workers is not positive.
    """
    counts = Counter(node.name for node in nodes)
    duplicates = sorted(name for name, count in counts.items() if count > 1)
    if duplicates:
        raise ValueError(f"node names must be unique; repeated: {', '.join(duplicates)}")
    if timeout <= 0 or max_workers < 1:
        raise ValueError(f"timeout and max_workers must be positive ({timeout}, {max_workers})")
    if not nodes:
        return {}
    with ThreadPoolExecutor(
        max_workers=min(max_workers, len(nodes)), thread_name_prefix="ugro-netprobe"
    ) as pool:
        probes = list(pool.map(lambda node: probe_node(node, known_hosts, timeout), nodes))
    return {probe.node: probe for probe in probes}


def probe_node(node: ClusterNode, known_hosts: Path, timeout: float) -> NetProbe:
    """Probe one node (see probe_nodes); failures are reported, not raised."""
    client = paramiko.SSHClient()
    client.set_log_channel(_SSH_LOG)
    try:
        try:
            transport = _connect(client, node, known_hosts, timeout)
        except _ProbeFailure as failure:
            return NetProbe(node.name, reachable=False, latency_ms=None, error=str(failure))
        errors: list[str] = []
        latency_ms = None
        try:
            result = _run(transport, _LATENCY_COMMAND, timeout)
            latency_ms = result.seconds * 1000
            if result.status != 0:
                said = f": {_quote(result.stderr)}" if result.stderr.strip() else ""
                errors.append(f"`true` exited with status {result.status} on {node.name}{said}")
        except _ProbeFailure as failure:
            errors.append(str(failure))
        gpus = None
        if node.gpu_query:
            try:
                gpus = _query_gpus(transport, node, timeout)
            except _ProbeFailure as failure:
                errors.append(str(failure))
        return NetProbe(node.name, True, latency_ms, "; ".join(errors) or None, gpus)
    except Exception as exc:  # one node's surprise must not sink the whole sweep
        error = f"probe of {node.name} ({node.address}) failed: {type(exc).__name__}: {exc}"
        return NetProbe(node.name, reachable=False, latency_ms=None, error=error)
    finally:
        client.close()


class _ProbeFailure(Exception):
    """A probe step failed; the message says which and why, for NetProbe.error."""


class _UnknownHostKey(paramiko.SSHException):
    pass


class _RejectUnknownHostKey(paramiko.RejectPolicy):
    """paramiko's RejectPolicy, raising an error that ugro can tell apart."""

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> NoReturn:
        raise _UnknownHostKey(f"{key.get_name()} {key.fingerprint}")


def _connect(
    client: paramiko.SSHClient, node: ClusterNode, known_hosts: Path, timeout: float
) -> paramiko.Transport:
    """Connect and log in, or raise _ProbeFailure saying which step failed."""
    where = f"{node.name} ({node.address})"
    if known_hosts.is_file():
        try:
            # As "system" host keys: paramiko never writes those back.
            client.load_system_host_keys(str(known_hosts))
        except OSError as exc:
            raise _ProbeFailure(f"cannot read known_hosts {known_hosts}: {exc}") from exc
    client.set_missing_host_key_policy(_RejectUnknownHostKey())
    pkey = _private_key(node.key) if node.key is not None else None
    sock = _tcp_connect(node, timeout)
    try:
        # Given the host and port as well as the socket, paramiko looks the host key
        # up under "[host]:port" for ports other than 22, as OpenSSH writes it.
        client.connect(
            node.host,
            port=node.port,
            sock=sock,
            username=node.user or getpass.getuser(),
            pkey=pkey,
            # With an explicit key, that key alone: no agent or ~/.ssh/id_* guesses.
            allow_agent=pkey is None,
            look_for_keys=pkey is None,
            banner_timeout=timeout,
            auth_timeout=timeout,
            channel_timeout=timeout,
            timeout=timeout,
        )
    except _UnknownHostKey as exc:
        missing = "" if known_hosts.is_file() else ", which does not exist"
        raise _ProbeFailure(
            f"host key of {node.address} is not in {known_hosts}{missing}"
            f" ({node.name} offered {exc}); refusing to trust it unchecked"
        ) from exc
    except paramiko.BadHostKeyException as exc:
        raise _ProbeFailure(
            f"host key of {node.address} does not match {known_hosts}: {node.name} offered"
            f" {exc.key.get_name()} {exc.key.fingerprint}, expected {exc.expected_key.fingerprint}"
        ) from exc
    except paramiko.AuthenticationException as exc:
        user = node.user or getpass.getuser()
        with_key = f" with key {node.key}" if node.key else ""
        raise _ProbeFailure(f"{where} refused login as {user!r}{with_key}: {exc}") from exc
    except (paramiko.SSHException, EOFError, OSError) as exc:
        # Which step failed shows in the transport's state, not in paramiko's wording.
        transport = client.get_transport()
        if transport is None or not transport.remote_version:
            # paramiko's own message here depends on which of its waits ran out.
            failure = f"{where} accepted TCP but sent no SSH banner within {timeout:g} s"
        elif not transport.initial_kex_done:
            failure = f"SSH key exchange with {where} failed or took over {timeout:g} s: {exc}"
        else:
            failure = f"SSH login to {where} failed: {exc or type(exc).__name__}"
        raise _ProbeFailure(failure) from exc
    finally:
        if client.get_transport() is None:
            sock.close()  # else the transport owns it, and client.close() closes it
    transport = client.get_transport()
    assert transport is not None  # connect() returned
    return transport


def _tcp_connect(node: ClusterNode, timeout: float) -> socket.socket:
    where = f"{node.name} ({node.address})"
    try:
        sock = socket.create_connection((node.host, node.port), timeout=timeout)
    except socket.gaierror as exc:
        raise _ProbeFailure(f"cannot resolve the host of {where}: {exc.strerror}") from exc
    except TimeoutError as exc:
        raise _ProbeFailure(f"no TCP connection to {where} within {timeout:g} s") from exc
    except ConnectionRefusedError as exc:
        raise _ProbeFailure(f"cannot connect to {where}: connection refused") from exc
    except OSError as exc:
        raise _ProbeFailure(f"cannot connect to {where}: {exc.strerror or exc}") from exc
    # SSH's small request/reply packets would otherwise wait out delayed ACKs
    # (40 ms on Linux), which would swamp the latency being measured.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _private_key(path: Path) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(path)
    except paramiko.PasswordRequiredException as exc:
        raise _ProbeFailure(f"key {path} is protected by a passphrase") from exc
    except OSError as exc:
        raise _ProbeFailure(f"cannot read key {path}: {exc.strerror or exc}") from exc
    except (paramiko.SSHException, ValueError) as exc:
        raise _ProbeFailure(f"key {path} is not a usable private key: {exc}") from exc


class _Result(NamedTuple):
    status: int
    stdout: str
    stderr: str
    # From the exec request to the exit status: one round trip plus the command.
    seconds: float


def _run(transport: paramiko.Transport, command: str, timeout: float) -> _Result:
    """Run a fixed command over a channel of its own.

    paramiko waits for the reply to an exec request without a time limit, so a
    timer closes the channel at the deadline, which ends every wait on it. Opening
    the channel is not timed: the first one after login also waits for the server
    to finish setting up the session (some 40 ms for OpenSSH).
    """
    try:
        channel = transport.open_session(timeout=timeout)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise _ProbeFailure(f"cannot open an SSH channel to run `{command}`: {exc}") from exc
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        _close(channel)

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    try:
        started = time.monotonic()
        channel.exec_command(command)
        stdout = _read_all(channel.recv)
        stderr = _read_all(channel.recv_stderr)
        channel.status_event.wait()
        seconds = time.monotonic() - started
    except (paramiko.SSHException, EOFError, OSError) as exc:
        if not expired.is_set():
            raise _ProbeFailure(f"running `{command}` failed: {exc}") from exc
    finally:
        timer.cancel()
        _close(channel)
    if expired.is_set():
        name = command.split()[0]
        raise _ProbeFailure(f"`{name}` did not finish within {timeout:g} s")
    return _Result(channel.exit_status, stdout, stderr, seconds)


def _close(channel: paramiko.Channel) -> None:
    # close() marks the channel closed, waking its waiters, before it tells the
    # server; that message fails when the connection is already gone.
    with contextlib.suppress(EOFError, OSError, paramiko.SSHException):
        channel.close()


def _read_all(recv: Callable[[int], bytes]) -> str:
    chunks: list[bytes] = []
    while chunk := recv(65536):
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _query_gpus(
    transport: paramiko.Transport, node: ClusterNode, timeout: float
) -> list[dict[str, Any]]:
    result = _run(transport, _GPU_COMMAND, timeout)
    if result.status != 0:
        said = _quote(result.stderr) or _quote(result.stdout) or "no output"
        reason = "not found" if result.status == 127 else f"exited with status {result.status}"
        raise _ProbeFailure(f"nvidia-smi on {node.name} {reason}: {said}")
    return _parse_gpus(result.stdout, node.name)


def _parse_gpus(text: str, node: str) -> list[dict[str, Any]]:
    """GPUs from ``nvidia-smi --format=csv,noheader,nounits`` lines of _GPU_FIELDS.

    Readings a GPU does not report (``[N/A]``, ``[Not Supported]``) are None.
    """
    gpus = []
    for line in text.splitlines():
        if not line.strip():
            continue
        values = [value.strip() for value in line.split(",")]
        if len(values) != len(_GPU_FIELDS):
            raise _ProbeFailure(f"nvidia-smi on {node} printed an unexpected line: {_quote(line)}")
        try:
            gpu: dict[str, Any] = {"index": int(values[0])}
            for field, value in zip(_GPU_FIELDS[1:], values[1:], strict=True):
                gpu[field] = None if value.startswith("[") else float(value)
        except ValueError as exc:
            raise _ProbeFailure(
                f"nvidia-smi on {node} printed an unexpected line: {_quote(line)}"
            ) from exc
        gpus.append(gpu)
    return gpus


def _quote(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_QUOTED else text[: _MAX_QUOTED - 3] + "..."
