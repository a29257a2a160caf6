"""Which log file a request for a job's log names: its training log, one rank's, or
the first rank's of its member on one node, of the newest attempt or of one."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ugro.errors import SpecError
from ugro.job import Job
from ugro.registry.members import members_of
from ugro.runtime import Runtime


def log_file(
    rt: Runtime, job: Job, attempt: int | None, rank: int | None, node: str | None
) -> Path:
    """The log a request names (see ``Client.logs``).

    Raises:
        SpecError: an attempt, rank or node the job does not have, or both a rank
            and a node.
    """
    paths = rt.paths(job.id)
    if attempt is not None and not 1 <= attempt <= max(job.attempt, 1):
        raise SpecError(f"attempt: job {job.id} has attempts 1 to {job.attempt}")
    if rank is not None and node is not None:
        raise SpecError("rank, node: give one or the other, not both")
    if node is not None:
        rank = _node_rank_on(rt, job, node, attempt) * _ranks_per_node(rt, job)
        if attempt is None and job.is_gang:
            # The member's own name for its log: the node's, whichever rank it ran.
            return paths.node_logs(node) / paths.rank_log(rank).name
    elif rank is None:
        return paths.training_log if attempt is None else paths.attempt_training_log(attempt)
    else:
        ranks = job.num_nodes * _ranks_per_node(rt, job)
        if not 0 <= rank < ranks:
            shown = "only rank 0" if ranks == 1 else f"ranks 0-{ranks - 1}"
            raise SpecError(f"rank: job {job.id} has {shown}, not {rank}")
    path = paths.rank_log(rank)
    return path if attempt is None else paths.attempt_logs(attempt) / path.name


def _ranks_per_node(rt: Runtime, job: Job) -> int:
    """The ranks each of the job's nodes runs: one a GPU when it is launched one
    process a GPU, else one."""
    spec = json.loads(rt.registry.get_job(job.id).spec)
    return job.gpus if spec.get("launch") == "gpu" else 1


def _node_rank_on(rt: Runtime, job: Job, node: str, attempt: int | None) -> int:
    """The node rank of the job's member on ``node`` in ``attempt`` (default: the
    newest); 0 for a one-node job that ran there.

    Raises:
        SpecError: the job never ran on that node, or not in that attempt.
    """
    ran_on = rt.paths(job.id).nodes() if job.is_gang else [n for n in [job.node] if n]
    if node not in ran_on:
        where = ", ".join(ran_on) if ran_on else "no node yet"
        raise SpecError(f"node: job {job.id} ran on {where}, not {node!r}")
    if not job.is_gang:
        return 0
    number = attempt or job.attempt
    members = members_of(rt.registry, job.id, number)
    member = next((m for m in members if m.node == node), None)
    if member is None:
        where = ", ".join(m.node for m in members) or "no node"
        raise SpecError(f"node: attempt {number} of job {job.id} ran on {where}, not {node!r}")
    return member.rank


def follow_log(
    read_job: Callable[[str], Job], job: Job, path: Path, follow: bool, poll: float
) -> Iterator[str]:
    """What ``path`` holds; with ``follow``, what is added to it until the job has
    ended (``read_job`` reads it anew), starting over when a new attempt replaces
    the file."""
    offset, inode = 0, None
    while True:
        if path.exists():
            with path.open("r", encoding="utf-8", errors="replace") as handle:
                current = os.fstat(handle.fileno()).st_ino
                if inode is not None and current != inode:
                    offset = 0  # a new attempt started: its log is a new file
                    yield f"--- attempt {read_job(job.id).attempt} ---\n"
                inode = current
                handle.seek(offset)
                chunk = handle.read()
                offset = handle.tell()
            if chunk:
                yield chunk
                continue
        if not follow or job.done:
            return
        time.sleep(poll)
        job = read_job(job.id)
