"""A real OpenSSH server on loopback for the tests, and sockets that play dead nodes.

The server runs as the test's own user (root here) with a config, host key and
authorized_keys made in a directory of the test, so it trusts only the client key
made beside them and answers only on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class SshServer:
    host: str
    port: int
    user: str
    #: The private key the server lets `user` log in with.
    client_key: Path
    #: The server's public host key, "<type> <base64>".
    host_public_key: str

    def known_hosts_line(self) -> str:
        """The line of an OpenSSH known_hosts file for this server."""
        return f"[{self.host}]:{self.port} {self.host_public_key}\n"


def make_key(path: Path) -> str:
    """A new ed25519 key pair at ``path`` (+ ``.pub``); returns "<type> <base64>"."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ugro-test", "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=10,
    )
    kind, data, *_ = path.with_suffix(".pub").read_text().split()
    return f"{kind} {data}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def running_sshd(directory: Path, path: str | None = None) -> Iterator[SshServer]:
    """Start sshd on a free loopback port; stop it on exit.

    Args:
        directory: where its config, keys and log go (made if missing).
        path: the PATH its sessions see (default: the system's).
    """
    directory.mkdir(parents=True, exist_ok=True)
    # sshd refuses to start without its privilege-separation directory.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    host_public_key = make_key(directory / "host_key")
    client_key = directory / "client_key"
    (directory / "authorized_keys").write_text(make_key(client_key) + "\n")
    port = free_port()
    lines = [
        f"ListenAddress {LOOPBACK}",
        f"Port {port}",
        f"HostKey {directory / 'host_key'}",
        f"AuthorizedKeysFile {directory / 'authorized_keys'}",
        f"PidFile {directory / 'sshd.pid'}",
        "UsePAM no",
        "StrictModes no",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "AllowAgentForwarding no",
        "AllowTcpForwarding no",
        "X11Forwarding no",
        "PrintMotd no",
        # The sweep test opens ~100 connections at once; the default (10:30:100)
        # would drop some of them before authentication.
        "MaxStartups 200",
        "MaxSessions 50",
        "LogLevel ERROR",
    ]
    # Sessions get a HOME of their own, so the shell that runs each command reads
    # no dotfiles of the real user (a slow .bashrc would time every probe out).
    home = directory / "home"
    home.mkdir(exist_ok=True)
    environment = f"HOME={home}" + (f" PATH={path}" if path is not None else "")
    lines.append(f"SetEnv {environment}")
    config = directory / "sshd_config"
    config.write_text("\n".join(lines) + "\n")
    log = directory / "sshd.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_banner(port, process, log)
        yield SshServer(LOOPBACK, port, getpass.getuser(), client_key, host_public_key)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _wait_for_banner(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited with {process.returncode}: {log.read_text()}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1) as sock:
                if sock.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"sshd did not answer on port {port} within 10 s: {log.read_text()}")


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A loopback port that accepts TCP connections and never says a word."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        # The kernel completes handshakes into the backlog; nobody ever accepts.
        sock.listen(128)
        yield sock.getsockname()[1]


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port where nothing listens: connections are refused at once.

    The socket stays bound, without listening, so no other process takes the port.
    """
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        yield sock.getsockname()[1]


def fake_nvidia_smi(directory: Path, output: str, status: int = 0) -> str:
    """A directory holding an ``nvidia-smi`` that prints ``output`` and exits with
    ``status`` (to stderr when it fails); returns a PATH that finds it first."""
    directory.mkdir(parents=True, exist_ok=True)
    stream = ">&2" if status else ""
    script = directory / "nvidia-smi"
    script.write_text(f"#!/bin/sh\ncat {stream} <<'EOF'\n{output}EOF\nexit {status}\n")
    script.chmod(0o755)
    return f"{directory}{os.pathsep}/usr/local/bin:/usr/bin:/bin"
