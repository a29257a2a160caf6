"""A test job across nodes: its ranks meet at MASTER_ADDR:MASTER_PORT over TCP and
sum their ranks, as an all-reduce would.

Usage: allreduce.py [OUT_DIR] [--timeout S] [--hold S] [--fail-rank R]
[--fail-attempt N] [--torch]

The rank is RANK (one process a GPU) or else UGRO_NODE_RANK (one process a node);
the world is WORLD_SIZE or else UGRO_NUM_NODES, to match. Rank 0 listens, every
other rank connects (retrying until --timeout), sends its rank as a line and reads
the sum back. Each rank writes OUT_DIR/rank_<rank>.json (default OUT_DIR:
$UGRO_JOB_DIR/allreduce) with the sum, the environment ugro gave it and the local
address it used, prints ``rank R of W: sum S`` and exits 0; it exits 1 on a timeout
and 3 when --fail-rank names it (on attempt --fail-attempt only). With --torch it
also all-reduces through torch.distributed (gloo, on MASTER_PORT + 1) when torch is
installed, and records ``torch_sum`` (null without torch).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

ENV_NAMES = (
    "RANK",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "WORLD_SIZE",
    "CUDA_VISIBLE_DEVICES",
    "UGRO_NUM_NODES",
    "UGRO_NODE_RANK",
    "UGRO_GPUS_PER_NODE",
    "UGRO_NODE_ADDRESSES",
    "MASTER_ADDR",
    "MASTER_PORT",
    "UGRO_NODE",
    "UGRO_ATTEMPT",
    "UGRO_LAUNCH",
)
RETRY_EVERY = 0.1  # seconds between connection attempts to rank 0


class Timeout(Exception):
    """The rendezvous did not complete before the deadline."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Sum the ranks of a job across nodes.")
    parser.add_argument("out", nargs="?", help="where rank_<rank>.json goes")
    parser.add_argument("--timeout", type=float, default=60.0, help="rendezvous deadline (s)")
    parser.add_argument("--hold", type=float, default=0.0, help="sleep this long before exiting")
    parser.add_argument("--fail-rank", type=int, default=None, help="this rank exits 3")
    parser.add_argument("--fail-attempt", type=int, default=1, help="only on this UGRO_ATTEMPT")
    parser.add_argument("--torch", action="store_true", help="also all-reduce with torch (gloo)")
    return parser.parse_args(argv)


def rank_and_world() -> tuple[int, int]:
    """RANK and WORLD_SIZE when set (a process a GPU), else the node's rank and the
    number of nodes (a process a node)."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return int(os.environ["UGRO_NODE_RANK"]), int(os.environ["UGRO_NUM_NODES"])


def remaining(deadline: float, waiting_for: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise Timeout(f"timed out waiting for {waiting_for}")
    return left


def read_line(conn: socket.socket, deadline: float, waiting_for: str) -> str:
    data = b""
    while not data.endswith(b"\n"):
        conn.settimeout(remaining(deadline, waiting_for))
        try:
            chunk = conn.recv(64)
        except TimeoutError:
            raise Timeout(f"timed out waiting for {waiting_for}") from None
        if not chunk:
            raise ConnectionError(f"connection closed while waiting for {waiting_for}")
        data += chunk
    return data.decode().strip()


def serve(addr: str, port: int, world: int, deadline: float) -> tuple[int, str]:
    """Rank 0: take every other rank's value, send each the sum."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((addr, port))
        listener.listen(max(world, 1))
        local = str(listener.getsockname()[0])
        peers: dict[int, socket.socket] = {}
        try:
            while len(peers) < world - 1:
                waiting = f"{world - 1 - len(peers)} of {world - 1} ranks at {addr}:{port}"
                listener.settimeout(remaining(deadline, waiting))
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    raise Timeout(f"timed out waiting for {waiting}") from None
                peer = int(read_line(conn, deadline, "a peer's rank"))
                if not 0 < peer < world or peer in peers:
                    conn.close()
                    raise ValueError(f"rank {peer} is out of range or came twice (world {world})")
                peers[peer] = conn
            total = sum(peers)  # and rank 0's own, which adds nothing
            for conn in peers.values():
                conn.sendall(f"{total}\n".encode())
        finally:
            for conn in peers.values():
                conn.close()
    return total, local


def join(addr: str, port: int, rank: int, deadline: float) -> tuple[int, str]:
    """Any other rank: send this rank to rank 0, read the sum back."""
    while True:
        try:
            conn = socket.create_connection((addr, port), timeout=remaining(deadline, "rank 0"))
            break
        except OSError:  # ConnectionRefusedError among them: rank 0 is not up yet
            time.sleep(min(RETRY_EVERY, max(deadline - time.monotonic(), 0)))
    with conn:
        local = str(conn.getsockname()[0])
        conn.sendall(f"{rank}\n".encode())
        total = int(read_line(conn, deadline, f"the sum from rank 0 at {addr}:{port}"))
    return total, local


def torch_sum(addr: str, port: int, rank: int, world: int) -> int | None:
    """The sum through torch.distributed (gloo), or None without torch."""
    try:
        torch: Any = importlib.import_module("torch")
    except ImportError:
        return None
    dist: Any = importlib.import_module("torch.distributed")
    dist.init_process_group(
        "gloo", init_method=f"tcp://{addr}:{port + 1}", rank=rank, world_size=world
    )
    try:
        value = torch.tensor([rank])
        dist.all_reduce(value)
        return int(value.item())
    finally:
        dist.destroy_process_group()


def write_atomic(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    rank, world = rank_and_world()
    addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    if args.out is not None:
        out = Path(args.out)
    elif "UGRO_JOB_DIR" in os.environ:
        out = Path(os.environ["UGRO_JOB_DIR"]) / "allreduce"
    else:
        print("allreduce: give OUT_DIR or set UGRO_JOB_DIR", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)

    deadline = time.monotonic() + args.timeout
    try:
        if rank == 0:
            total, local = serve(addr, port, world, deadline)
        else:
            total, local = join(addr, port, rank, deadline)
    except Timeout as exc:
        print(f"allreduce: rank {rank} of {world}: {exc} after {args.timeout:g} s", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:  # rank 0's port taken, a peer gone, a bad line
        print(f"allreduce: rank {rank} of {world}: {exc}", file=sys.stderr)
        return 1

    record: dict[str, Any] = {"rank": rank, "world_size": world, "sum": total}
    record |= {name: os.environ.get(name) for name in ENV_NAMES}
    record["hostname_address"] = local
    if args.torch:
        record["torch_sum"] = torch_sum(addr, port, rank, world)
    write_atomic(out / f"rank_{rank}.json", record)
    print(f"rank {rank} of {world}: sum {total}", flush=True)

    attempt = os.environ.get("UGRO_ATTEMPT")
    if rank == args.fail_rank and attempt == str(args.fail_attempt):
        print(f"RuntimeError: rank {rank} failed on purpose", file=sys.stderr, flush=True)
        return 3
    time.sleep(args.hold)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
