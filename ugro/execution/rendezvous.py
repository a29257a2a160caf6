"""Where a gang job's members meet: each node's address, the port, the variables.

Every member computes the same ``MASTER_PORT`` from the job's id and attempt, with
no coordination (as submitit does): a retry gets another port, so a rank of the
attempt before that still holds its port does not meet the new one.
"""

from __future__ import annotations

import functools
import hashlib
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from ugro.settings import Settings


def master_port(job_id: str, attempt: int, ports: tuple[int, int]) -> int:
    """The rendezvous port of one attempt of a job, within ``ports`` (low, high)."""
    low, high = ports
    digest = hashlib.sha256(f"{job_id}:{attempt}".encode()).digest()
    return low + int.from_bytes(digest[:8], "big") % (high - low + 1)


def node_address(settings: Settings) -> str:
    """This node's address as the other nodes reach it: ``UGRO_NODE_ADDRESS`` when
    set, else the address of the interface that reaches Redis (loopback for the
    embedded Redis, which only this machine reaches)."""
    if settings.node_address:
        return settings.node_address
    return _address_towards(settings.effective_redis_url)


@functools.cache
def _address_towards(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == "unix" or not parts.hostname:
        return "127.0.0.1"
    family = socket.AF_INET6 if ":" in parts.hostname else socket.AF_INET
    # Connecting a UDP socket sends nothing: the kernel only picks the route, and
    # with it the source address the other end would see.
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((parts.hostname, parts.port or 6379))
        except OSError:
            return socket.gethostbyname(socket.gethostname())
        return str(probe.getsockname()[0])


def gang_environment(
    num_nodes: int,
    node_rank: int,
    gpus_per_node: int,
    addresses: Sequence[str],
    port: int,
    launch: str,
) -> dict[str, str]:
    """What every member of a gang job (and a one-node job launched per GPU) gets."""
    return {
        "UGRO_NUM_NODES": str(num_nodes),
        "UGRO_NODE_RANK": str(node_rank),
        "UGRO_GPUS_PER_NODE": str(gpus_per_node),
        "UGRO_NODE_ADDRESSES": ",".join(addresses),
        "UGRO_LAUNCH": launch,
        "MASTER_ADDR": addresses[0],
        "MASTER_PORT": str(port),
        # The ranks there are when each GPU runs one: torchrun sets its own for the
        # processes it starts.
        "WORLD_SIZE": str(num_nodes * gpus_per_node),
    }
