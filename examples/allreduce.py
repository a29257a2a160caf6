"""A job across nodes: its ranks meet over TCP and sum their ranks, as an all-reduce
of torch.distributed would, with the standard library alone.

Submit it as a gang job, for example two nodes of two GPUs each, one process a GPU:

    ugro submit --name allreduce --nodes 2 --gpus 2 --launch gpu -- python allreduce.py

ugro sets these variables in every process of the job:

- ``RANK`` and ``WORLD_SIZE`` (``--launch gpu``): this process's rank among all
  the job's processes, and how many there are (nodes x GPUs a node).
- ``UGRO_NODE_RANK`` and ``UGRO_NUM_NODES``: this node's rank among the job's
  nodes, and how many there are. With ``--launch node`` (one process a node, which
  starts its own workers, as torchrun does) these are the rank and the world.
- ``MASTER_ADDR`` and ``MASTER_PORT``: where rank 0 listens, the same for every
  rank (torch.distributed reads the same two).
- ``UGRO_NODE``: the name of the node this process runs on.

Rank 0 listens; every other rank connects (retrying while rank 0 starts), sends its
rank on a line and reads the sum back. Each prints ``rank R of W on NODE: sum S``
and exits 0; a rank that cannot meet the others within TIMEOUT seconds exits 1.
"""

from __future__ import annotations

import os
import socket
import sys
import time

TIMEOUT = 60.0  # seconds for every rank to meet
RETRY_EVERY = 0.1  # seconds between attempts to reach rank 0


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of ranks."""
    if "RANK" in os.environ:  # one process a GPU
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return int(os.environ["UGRO_NODE_RANK"]), int(os.environ["UGRO_NUM_NODES"])


def left(deadline: float, waiting_for: str) -> float:
    """The seconds left before ``deadline``; TimeoutError once there are none."""
    seconds = deadline - time.monotonic()
    if seconds <= 0:
        raise TimeoutError(f"timed out waiting for {waiting_for}")
    return seconds


def read_line(conn: socket.socket) -> str:
    """One line from ``conn`` (the socket's timeout bounds each read)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(64)
        if not chunk:
            raise ConnectionError("the other end closed the connection")
        data += chunk
    return data.decode().strip()


def serve(addr: str, port: int, world: int, deadline: float) -> int:
    """Rank 0: take every other rank's value, then send each of them the sum."""
    with socket.create_server((addr, port)) as listener:
        peers: list[socket.socket] = []
        try:
            values = [0]  # rank 0's own
            while len(peers) < world - 1:
                waiting_for = f"{world - 1 - len(peers)} more ranks at {addr}:{port}"
                listener.settimeout(left(deadline, waiting_for))
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    raise TimeoutError(f"timed out waiting for {waiting_for}") from None
                peers.append(conn)
                conn.settimeout(left(deadline, "a rank's value"))
                values.append(int(read_line(conn)))
            total = sum(values)
            for conn in peers:
                conn.sendall(f"{total}\n".encode())
        finally:
            for conn in peers:
                conn.close()
    return total


def join(addr: str, port: int, rank: int, deadline: float) -> int:
    """Any other rank: send this rank's value to rank 0, read the sum back."""
    while True:
        try:
            conn = socket.create_connection((addr, port), timeout=1.0)
            break
        except OSError:  # refused: rank 0 is not listening yet
            left(deadline, f"rank 0 at {addr}:{port}")
            time.sleep(RETRY_EVERY)
    with conn:
        conn.settimeout(left(deadline, "the sum from rank 0"))
        conn.sendall(f"{rank}\n".encode())
        return int(read_line(conn))


def main() -> int:
    rank, world = rank_and_world()
    addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    deadline = time.monotonic() + TIMEOUT
    try:
        if rank == 0:
            total = serve(addr, port, world, deadline)
        else:
            total = join(addr, port, rank, deadline)
    except (OSError, ValueError) as exc:  # TimeoutError among them
        print(f"rank {rank} of {world}: {exc}", file=sys.stderr)
        return 1
    print(f"rank {rank} of {world} on {os.environ.get('UGRO_NODE', '?')}: sum {total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
