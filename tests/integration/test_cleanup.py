"""`ugro rm`, `ugro gc` and the job retention: ended jobs go for good, nothing
running or queued is touched."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import update

from beat_schedule import beat_schedule
from tests.conftest import (
    make_settings,
    registry_database,
    running_stack,
    ugro,
    wait_for_job,
    wait_until,
)
from ugro import Client, JobSpec
from ugro.registry.models import JobRow, utcnow
from ugro.settings import Settings
from ugro.transport.queues import control_queue

GATED = 'while [ ! -e "$UGRO_JOB_DIR/go" ]; do sleep 0.05; done'


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    root = tmp_path_factory.mktemp("cleanup")
    with registry_database(root) as url:
        settings = make_settings(root / "data", url, job_retention_days=30)
        with running_stack(settings) as running:
            yield running


@pytest.fixture
def client(lab: Settings) -> Iterator[Client]:
    with Client(lab) as c:
        yield c


def ended(client: Client, *specs: JobSpec) -> list[str]:
    jobs = client.submit_many(list(specs))
    client.wait([job.id for job in jobs], timeout=30)
    return [job.id for job in jobs]


def running(client: Client, name: str) -> str:
    job = client.submit(JobSpec(name=name, command=[GATED], shell=True))
    wait_for_job(client, job.id, lambda j: j.status.value == "running", 30)
    return job.id


def let_go(client: Client, job_id: str) -> None:
    (client.rt.paths(job_id).root / "go").touch()
    client.wait([job_id], timeout=30)


def ended_days_ago(client: Client, job_ids: list[str], days: float) -> None:
    """Move these jobs' ends back in time, as if they ended ``days`` ago."""
    with client.rt.registry.engine.begin() as conn:
        conn.execute(
            update(JobRow)
            .where(JobRow.id.in_(job_ids))
            .values(finished_at=utcnow() - timedelta(days=days))
        )


def gone(client: Client, job_id: str) -> bool:
    """No registry row, no Redis record and no folder is left of the job."""
    rows = client.rt.registry.list_jobs(ids=[job_id])
    live = client.rt.live.redis.exists(client.rt.live.keys.job(job_id))
    return not rows and not live and not client.rt.paths(job_id).root.exists()


@pytest.mark.timeout(60)
def test_rm_removes_ended_jobs_and_refuses_a_running_one_naming_it(
    lab: Settings, client: Client
) -> None:
    # given a finished job, a failed one and a running one
    finished, failed = ended(
        client, JobSpec(name="ok", command=["true"]), JobSpec(name="bad", command=["false"])
    )
    busy = running(client, "busy")
    try:
        # when all three are removed at once, then it is refused, naming the running
        # one, and nothing is removed
        refused = ugro(lab, "rm", finished, busy)
        assert refused.returncode == 2, refused.stderr
        assert busy in refused.stderr and "running" in refused.stderr
        assert client.get(finished).status.value == "finished"
        # when the ended ones are removed (one by a prefix of its id, one keeping its
        # folder), then their rows and Redis records are gone, and the folder as asked
        removed = ugro(lab, "rm", finished)
        assert removed.returncode == 0, removed.stderr
        assert gone(client, finished)
        kept = ugro(lab, "rm", "--keep-tree", failed[:-2])
        assert kept.returncode == 0, kept.stderr
        assert not client.rt.registry.list_jobs(ids=[failed])
        assert (client.rt.paths(failed).root / "config.json").exists()
        # and the running job runs on, untouched
        assert client.get(busy).status.value == "running"
    finally:
        let_go(client, busy)


@pytest.mark.timeout(60)
def test_an_ended_array_goes_whole_with_its_record(lab: Settings, client: Client) -> None:
    # given an array whose tasks all ended
    array = client.submit_array(JobSpec(name="arr", command=["true"]), range(3))
    client.wait([array.id], timeout=30)
    tasks = [task.id for task in client.get_array(array.id).tasks]
    record = lab.arrays_dir / f"{array.id}.json"
    assert record.exists()
    # when one of its tasks is removed alone, then it is refused
    alone = ugro(lab, "rm", tasks[0])
    assert alone.returncode == 2 and array.id in alone.stderr, alone.stderr
    # when the array is removed, then its tasks, its row and its record go together
    whole = ugro(lab, "rm", array.id)
    assert whole.returncode == 0, whole.stderr
    assert all(gone(client, task) for task in tasks)
    assert not client.is_array(array.id) and not record.exists()


@pytest.mark.timeout(60)
def test_gc_removes_what_ended_before_the_cutoff_in_the_status_asked(
    lab: Settings, client: Client
) -> None:
    # given an old failed job, an old finished one, a recent failed one, and a job
    # running since long ago
    old_failed, old_finished, new_failed = ended(
        client,
        JobSpec(name="oldbad", command=["false"]),
        JobSpec(name="oldok", command=["true"]),
        JobSpec(name="newbad", command=["false"]),
    )
    ended_days_ago(client, [old_failed, old_finished], 40)
    busy = running(client, "longrun")
    try:
        ended_days_ago(client, [busy], 40)  # (a stale value must not matter)
        # when gc is asked, dry, for failed jobs older than 30 days
        dry = ugro(lab, "gc", "--older-than", "30d", "--status", "failed", "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        assert json.loads(dry.stdout)["jobs"] == [old_failed]
        assert client.rt.registry.list_jobs(ids=[old_failed])  # (dry: still there)
        # then for real: only the old failed job goes
        done = ugro(lab, "gc", "--older-than", "30d", "--status", "failed")
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == [old_failed]
        assert gone(client, old_failed)
        left = {job.id for job in client.get_many([old_finished, new_failed, busy])}
        assert left == {old_finished, new_failed, busy}
        assert client.get(busy).status.value == "running"
    finally:
        let_go(client, busy)


@pytest.mark.timeout(60)
def test_beat_retention_removes_jobs_ended_longer_ago_than_the_setting(
    lab: Settings, client: Client
) -> None:
    # given UGRO_JOB_RETENTION_DAYS=30, a job that ended 31 days ago and one today
    old, recent = ended(
        client, JobSpec(name="old", command=["true"]), JobSpec(name="new", command=["true"])
    )
    ended_days_ago(client, [old], 31)
    assert not gone(client, old)
    # when beat's retention entry runs on the stack's control worker
    entry = beat_schedule(lab)["job-retention"]
    assert entry["options"]["queue"] == control_queue(lab)
    client.rt.app.send_task(entry["task"], queue=control_queue(lab))
    # then the old job goes, the recent one stays
    wait_until(lambda: gone(client, old), 30, "the old job's removal")
    assert client.get(recent).status.value == "finished"


@pytest.mark.timeout(60)
def test_an_ended_job_a_waiting_job_depends_on_is_kept(lab: Settings, client: Client) -> None:
    # given a job that ended long ago, and a queued job waiting on it and on a
    # running one
    [first] = ended(client, JobSpec(name="first", command=["true"]))
    ended_days_ago(client, [first], 40)
    busy = running(client, "second")
    waiting = client.submit(JobSpec(name="third", command=["true"], after=[first, busy]))
    try:
        # when it is removed, or collected, then it stays: the waiting job reads it
        refused = ugro(lab, "rm", first)
        assert refused.returncode == 2 and "waits on it" in refused.stderr, refused.stderr
        assert first not in client.gc(30 * 86400.0, dry_run=True).jobs
        assert client.get(first).status.value == "finished"
        assert client.get(waiting.id).status.value == "queued"
    finally:
        let_go(client, busy)
    assert client.wait([waiting.id], timeout=30)[0].succeeded
