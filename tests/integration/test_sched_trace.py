"""The scheduling simulator against the live stack: a small trace replayed by
`bench.sched_policies` and run on a real stack start its jobs in the same order.

Every job waits for a file before it ends, so the test decides when each ends: in
the order the replay ends them, one at a time, and after each end it waits for
the jobs the replay starts then. Timeouts are hundreds of seconds apart, far more
than either run lasts, so that no backfill decision depends on how long a job has
run; the ends in the replay are a few seconds apart and never at one instant.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.sched_policies import Job, Replay
from tests.conftest import make_settings, running_stack
from ugro import Client, JobSpec, JobStatus
from ugro.live.events import next_event
from ugro.settings import Settings

GATED = 'while [ ! -e "$UGRO_JOB_DIR/go" ]; do sleep 0.05; done'
# (name, GPUs, timeout (s), run in the replay (s)), in submission order. The blocker
# holds the 4 GPUs while the others are queued. c (4 GPUs) then waits for b, the
# longest timeout running: d, e, f and j, whose timeouts end before b's, go ahead.
TRACE = [
    ("blocker", 4, 9000, 5.0),
    ("a", 2, 1800, 3.0),
    ("b", 1, 7200, 4.0),
    ("c", 4, 3000, 2.0),
    ("d", 1, 600, 1.5),
    ("e", 1, 6000, 2.4),
    ("f", 2, 900, 2.2),
    ("g", 3, 2400, 1.2),
    ("h", 1, 1200, 3.3),
    ("i", 2, 4800, 1.1),
    ("j", 1, 300, 0.7),
    ("k", 1, 3600, 1.7),
    ("l", 2, 1500, 2.9),
]
FIFO_ORDER = [*"abcdefghijkl"]


def replayed() -> tuple[list[str], dict[str, float], dict[str, float]]:
    """The trace's names in the order the replay ends them, and each job's start
    and end in it."""
    jobs = [
        Job(n, name, 0.01 * n, run, gpus, 1, "someone", float(timeout))
        for n, (name, gpus, timeout, run) in enumerate(TRACE)
    ]
    started = Replay(jobs, 1, 4, "ugro").run()
    starts = {job.job_id: started[job.index] for job in jobs}
    ends = {job.job_id: started[job.index] + job.duration for job in jobs}
    return sorted(ends, key=ends.__getitem__), starts, ends


@pytest.fixture
def four_gpus(tmp_path: Path, database_url: str) -> Iterator[Settings]:
    # One user, so beat's fair share ranking (every 2 s here, so that GPUs a worker's
    # own take left free are placed soon) keeps the queue in submission order.
    settings = make_settings(
        tmp_path / "data", database_url, gpu_backend="fake:4", dispatch_interval=2.0
    )
    with running_stack(settings) as running:
        yield running


def started_names(client: Client, ids: dict[str, str]) -> set[str]:
    by_id = {job_id: name for name, job_id in ids.items()}
    jobs = client.get_many(list(ids.values()))
    return {by_id[job.id] for job in jobs if job.status is not JobStatus.QUEUED}


def wait_for_starts(client: Client, ids: dict[str, str], names: set[str], timeout: float) -> None:
    """Wait on the status events until every one of ``names`` has left the queue."""
    pubsub = client.rt.live.subscribe()
    deadline = time.monotonic() + timeout
    try:
        while not names <= (started := started_names(client, ids)):
            assert time.monotonic() < deadline, (
                f"waiting for {sorted(names - started)} to start; started: {sorted(started)}"
            )
            next_event(pubsub, 0.5)
    finally:
        pubsub.close()


@pytest.mark.timeout(90)
def test_the_live_stack_starts_a_trace_s_jobs_in_the_order_the_replay_predicts(
    four_gpus: Settings,
) -> None:
    # Given the replay's prediction, not plain FIFO, with no two ends at one instant
    end_order, starts, ends = replayed()
    assert len(set(ends.values())) == len(ends)
    assert sorted(FIFO_ORDER, key=starts.__getitem__) != FIFO_ORDER
    predicted = [
        {name for name in starts if starts[name] == at} for at in sorted(set(starts.values()))
    ]
    with Client(four_gpus) as client:
        # and the trace submitted while the blocker holds every GPU
        name, gpus, timeout, _ = TRACE[0]
        spec = JobSpec(name=name, command=[GATED], shell=True, gpus=gpus, timeout=timeout)
        ids = {name: client.submit(spec).id}
        wait_for_starts(client, ids, {name}, 30)
        for name, gpus, timeout, _ in TRACE[1:]:
            spec = JobSpec(name=name, command=[GATED], shell=True, gpus=gpus, timeout=timeout)
            ids[name] = client.submit(spec).id
        seen = [started_names(client, ids)]
        # When the jobs end in the replay's order, one at a time
        for name in end_order:
            (client.rt.paths(ids[name]).root / "go").touch()
            expected = {n for n in starts if starts[n] <= ends[name]}
            wait_for_starts(client, ids, expected, 20)
            now = started_names(client, ids)
            if now != seen[-1]:
                seen.append(now)
        done = client.wait(list(ids.values()), timeout=20)
    # Then the live stack started them in the same passes, in the same order
    live = [later - earlier for earlier, later in zip([set(), *seen[:-1]], seen, strict=True)]
    assert live == predicted
    assert all(job.status is JobStatus.FINISHED for job in done)
