"""Gang jobs on the multi-host bed (tests/hosts.py): jobs across hosts that really
are apart, their rendezvous, their failures, their tree."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import ugro
from tests.conftest import make_settings, registry_database, wait_for_job, wait_until
from tests.hosts import TestBed, multi_host_bed
from ugro import Client, JobSpec
from ugro.job import Job
from ugro.jobs.lifecycle import JobStatus
from ugro.registry.members import members_of
from ugro.registry.models import MemberRow
from ugro.scheduling.planning import gpu_view
from ugro.settings import Settings

JOBS = Path(__file__).parents[1] / "jobs"
ALLREDUCE = str(JOBS / "allreduce.py")
RANK_ENV = str(JOBS / "rank_env.py")


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestBed]:
    """Three hosts of two GPUs each, beat on the services host; one for the module:
    each test leaves its jobs ended."""
    where = tmp_path_factory.mktemp("gang")
    with registry_database(where) as database:
        settings = make_settings(
            where / "data",
            database,
            gang_start_timeout=20.0,
            placement_ttl=30.0,
            worker_ttl=6.0,
            breaker_open_seconds=3.0,
        )
        with multi_host_bed(settings, hosts=3, gpus=2, beat=True) as bed:
            with Client(bed.settings) as client:
                every_gpu = {(host.node, i) for host in bed.hosts for i in range(2)}
                wait_until(
                    lambda: (
                        {(w.node, w.index) for w in client.rt.live.workers(bed.settings.worker_ttl)}
                        == every_gpu
                    ),
                    90,
                    "every host's workers",
                    lambda: bed.log(bed.hosts[0]),
                )
            yield bed


def _logs(bed: TestBed) -> str:
    return "\n".join(f"--- {host.node}\n{bed.log(host)}" for host in bed.hosts)


def _member_processes(job_id: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["environ"]):
        try:
            if (proc.info["environ"] or {}).get("UGRO_JOB_ID") == job_id:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.mark.timeout(180)
def test_a_two_node_job_of_two_gpus_each_meets_across_hosts_and_all_reduces(
    bed: TestBed,
) -> None:
    with Client(bed.settings) as client:
        spec = JobSpec(
            name="allreduce",
            nodes=2,
            gpus=2,
            launch="gpu",
            # (with torch installed, its gloo backend all-reduces too)
            command=[sys.executable, ALLREDUCE, "--timeout", "30", "--torch"],
        )
        job = client.submit(spec)
        done = client.wait([job.id], timeout=120)[0]
        assert done.status is JobStatus.FINISHED, (done, _logs(bed))
        out = done.job_dir / "allreduce"
        results = [json.loads((out / f"rank_{r}.json").read_text()) for r in range(4)]
        # Then every rank met at rank 0's address and summed 0 + 1 + 2 + 3
        assert {r["sum"] for r in results} == {6}
        torch = importlib.util.find_spec("torch") is not None
        assert {r["torch_sum"] for r in results} == ({6} if torch else {None})
        addresses = {host.node: host.address for host in bed.hosts}
        node_of = {r["rank"]: r["UGRO_NODE"] for r in results}
        assert node_of[0] == node_of[1] != node_of[2] == node_of[3]
        for r in results:
            assert r["MASTER_ADDR"] == addresses[node_of[0]]
            assert r["hostname_address"] == addresses[r["UGRO_NODE"]]
            assert r["WORLD_SIZE"] == "4" and r["LOCAL_WORLD_SIZE"] == "2"
            assert r["LOCAL_RANK"] == str(r["rank"] % 2)


def _validate(document: dict[str, object], schema: str) -> None:
    import jsonschema

    path = Path(ugro.__file__).parent / "schemas" / schema
    validator = jsonschema.Draft202012Validator(json.loads(path.read_text()))
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]


def test_the_distributed_tree_is_complete_and_its_metadata_valid(bed: TestBed) -> None:
    with Client(bed.settings) as client:
        [job] = [j for j in client.list() if j.name == "allreduce" and j.succeeded][:1]
        paths = job.paths
        top = json.loads(paths.metadata.read_text())
        _validate(top, "metadata.schema.json")
        assert top["distributed"] is True and top["launch"] == "gpu"
        members = top["nodes"]
        assert [m["rank"] for m in members] == [0, 1]
        assert top["duration_s"] == max(m["duration_s"] for m in members)
        for member in members:
            node = member["node"]
            mine = json.loads(paths.node_metadata(node).read_text())
            _validate(mine, "node_metadata.schema.json")
            assert mine["exit_reason"] == "ok" and mine["ranks"] == member["ranks"]
            console = paths.node_console(node).read_text()
            assert f"rank {member['rank']} on {node}" in console
            for rank in member["ranks"]:
                # one file under its names: the node's, the top's, the attempt's
                under_node = paths.node_logs(node) / f"rank_{rank}.log"
                assert under_node.samefile(paths.rank_log(rank))
                assert under_node.samefile(paths.attempt_logs(1) / f"rank_{rank}.log")
                assert f"rank {rank} of 4: sum 6" in under_node.read_text()
        assert paths.training_log.samefile(paths.rank_log(0))
        console = paths.console.read_text()
        for member in members:
            assert f"rank {member['rank']} on {member['node']}" in console
        assert console.count(" started: ") == 2 and "attempt 1 ended: ok" in console


@pytest.mark.timeout(120)
def test_launch_per_gpu_sets_every_rank_variable_on_a_one_node_four_gpu_job(
    stack: Settings, tmp_path: Path
) -> None:
    with Client(stack) as client:
        out = tmp_path / "ranks"
        job = client.submit(
            JobSpec(
                name="per-gpu",
                gpus=4,
                launch="gpu",
                command=[sys.executable, RANK_ENV, str(out)],
            )
        )
        [done] = client.wait([job.id], timeout=60)
        assert done.succeeded, done.error
        seen = [json.loads((out / f"rank_{r}.json").read_text()) for r in range(4)]
        gpus = {r["CUDA_VISIBLE_DEVICES"] for r in seen}
        assert gpus == {str(i) for i in done.gpu_indices}
        for rank, env in enumerate(seen):
            assert env["RANK"] == env["LOCAL_RANK"] == str(rank)
            assert env["WORLD_SIZE"] == env["LOCAL_WORLD_SIZE"] == "4"
            assert env["UGRO_NUM_NODES"] == "1" and env["UGRO_NODE_RANK"] == "0"
            assert env["MASTER_ADDR"] == "127.0.0.1" or env["MASTER_ADDR"]
            assert env["UGRO_JOB_ID"] == job.id
            assert f"rank {rank} done" in done.paths.rank_log(rank).read_text()
        metadata = json.loads(done.paths.metadata.read_text())
        _validate(metadata, "metadata.schema.json")
        assert metadata["distributed"] is False


def _members(client: Client, job_id: str) -> list[MemberRow]:
    """The members of the job's latest attempt."""
    return members_of(client.rt.registry, job_id, client.get(job_id).attempt)


def _starts(job: Job, rank: int) -> int:
    """How many times the member of this rank started a process (its console lines)."""
    lines = job.paths.console.read_text().splitlines()
    return sum(1 for line in lines if f" rank {rank} on " in line and " started: " in line)


# Attempt 1 holds its ranks until killed; attempt 2 meets and ends at once. Each
# process start of a member is a line in starts_<node rank>.
HOLD_FIRST = (
    'echo "$UGRO_ATTEMPT" >> "$UGRO_JOB_DIR/starts_$UGRO_NODE_RANK"; '
    'if [ "$UGRO_ATTEMPT" = 1 ]; then hold=120; else hold=0; fi; '
    f"exec {sys.executable} {ALLREDUCE} --timeout 30 --hold $hold"
)


@pytest.mark.timeout(180)
def test_a_killed_member_stops_the_others_and_the_gang_is_retried_whole(bed: TestBed) -> None:
    with Client(bed.settings) as client:
        job = client.submit(
            JobSpec(name="killed", nodes=2, gpus=1, max_retries=1, shell=True, command=[HOLD_FIRST])
        )
        wait_until(
            lambda: len(_member_processes(job.id)) >= 2, 60, "both members", lambda: _logs(bed)
        )
        wait_until(
            lambda: (
                all(m.started_at for m in client.members(job.id))
                and len(client.members(job.id)) == 2
            ),
            30,
            "both members started",
        )
        # When rank 1's process is killed from outside
        [victim] = [
            p
            for p in _member_processes(job.id)
            if p.environ().get("UGRO_NODE_RANK") == "1" and "allreduce" in " ".join(p.cmdline())
        ]
        victim.kill()
        done = wait_for_job(client, job.id, lambda j: j.done, 90)
        # Then the attempt ended killed, rank 0 was stopped within the grace, the
        # gang ran again whole, and each member started once an attempt
        assert done.status is JobStatus.FINISHED and done.attempt == 2, (done, _logs(bed))
        first = members_of(client.rt.registry, job.id, 1)
        assert [m.exit_reason for m in first] == ["stopped", "killed"]
        assert first[0].ended_at is not None and first[1].ended_at is not None
        stopped_after = (first[0].ended_at - first[1].ended_at).total_seconds()
        assert 0 <= stopped_after <= bed.settings.stop_grace + 2
        [attempt_1, _] = client.rt.registry.attempts(job.id)
        assert attempt_1.exit_reason == "killed"
        assert _starts(done, 0) == _starts(done, 1) == done.attempt
        for rank in (0, 1):  # each member's process started once an attempt
            starts = (done.job_dir / f"starts_{rank}").read_text().split()
            assert starts == ["1", "2"]
        assert not _member_processes(job.id)


def _sleeper(name: str, seconds: float, **spec: object) -> JobSpec:
    return JobSpec(
        name=name, command=[sys.executable, "-c", f"import time; time.sleep({seconds})"], **spec
    )


@pytest.mark.timeout(180)
def test_a_waiting_gang_is_not_starved_by_a_stream_of_one_gpu_jobs(bed: TestBed) -> None:
    with Client(bed.settings) as client:
        # Given every GPU busy with jobs of unknown length
        fillers = [client.submit(_sleeper(f"fill{i}", 3)) for i in range(6)]
        wait_until(
            lambda: all(
                j.status is JobStatus.RUNNING for j in client.get_many([f.id for f in fillers])
            ),
            60,
            "the fillers running",
        )
        # When a gang of two whole hosts is queued, then a stream of one-GPU jobs
        gang = client.submit(
            JobSpec(name="gang", nodes=2, gpus=2, command=[sys.executable, ALLREDUCE])
        )
        stream = [client.submit(_sleeper(f"stream{i}", 1.5)) for i in range(10)]
        done = client.wait(
            [gang.id, *[s.id for s in stream], *[f.id for f in fillers]], timeout=120
        )
        assert all(job.succeeded for job in done), [(j.name, j.status, j.error) for j in done]
        gang_done = client.get(gang.id)
        # Then the gang's hosts ran no job of the stream before it started: the stream
        # ran on the third host meanwhile
        assert gang_done.started_at is not None
        gang_hosts = set(gang_done.nodes)
        assert len(gang_hosts) == 2
        before = [
            s
            for s in client.get_many([s.id for s in stream])
            if s.started_at is not None and s.started_at < gang_done.started_at
        ]
        assert all(s.node not in gang_hosts for s in before), (
            gang_hosts,
            [(s.name, s.node, s.started_at) for s in before],
            gang_done.started_at,
        )


@pytest.mark.timeout(180)
def test_an_open_breaker_keeps_the_gang_off_its_node(bed: TestBed) -> None:
    sick = bed.hosts[0].node
    control = bed.settings.data_dir / "fake-gpus.json"
    with Client(bed.settings) as client:
        # Given host0's GPU failing until its breaker opens
        control.write_text(json.dumps({f"{sick}:1": {"fail": "fell off the bus"}}))
        try:
            wait_until(
                lambda: any(
                    e.kind == "breaker_open" and e.node == sick for e in client.rt.registry.events()
                ),
                60,
                f"{sick}'s breaker to open",
            )
            # When a gang of two nodes is submitted while it is open
            job = client.submit(
                JobSpec(name="breaker", nodes=2, gpus=1, command=[sys.executable, ALLREDUCE])
            )
            [done] = client.wait([job.id], timeout=60)
        finally:
            control.write_text("{}")
        # Then it ran on the two other hosts
        assert done.succeeded, done.error
        assert sick not in done.nodes and len(set(done.nodes)) == 2
        wait_until(
            lambda: any(
                e.kind == "breaker_closed" and e.node == sick for e in client.rt.registry.events()
            ),
            60,
            f"{sick}'s breaker to close again",
        )


@pytest.mark.timeout(120)
def test_cancel_and_timeout_stop_every_member(bed: TestBed) -> None:
    hold = [sys.executable, ALLREDUCE, "--timeout", "30", "--hold", "120"]
    with Client(bed.settings) as client:
        cancelled = client.submit(JobSpec(name="cancel", nodes=2, gpus=1, command=hold))
        timed = client.submit(JobSpec(name="timeout", nodes=2, gpus=1, timeout=4, command=hold))
        wait_until(
            lambda: [bool(m.started_at) for m in _members(client, cancelled.id)] == [True, True],
            60,
            "the cancelled gang's members started",
        )
        client.cancel(cancelled.id, grace=2)
        done = {j.id: j for j in client.wait([cancelled.id, timed.id], timeout=60)}
        assert done[cancelled.id].status is JobStatus.CANCELLED
        assert {m.exit_reason for m in _members(client, cancelled.id)} == {"cancelled"}
        assert done[timed.id].status is JobStatus.FAILED
        assert done[timed.id].exit_reason == "timeout"
        assert {m.exit_reason for m in _members(client, timed.id)} <= {"timeout", "stopped"}
        assert not _member_processes(cancelled.id) and not _member_processes(timed.id)


@pytest.mark.timeout(180)
def test_a_member_that_never_starts_fails_the_attempt_and_the_retry_runs_elsewhere(
    bed: TestBed,
) -> None:
    frozen = bed.hosts[0]
    assert frozen.worker is not None
    with Client(bed.settings) as client:
        # (every GPU free, the earlier tests' last leases let go: the gang goes to
        # the first two hosts by name, host0 among them)
        wait_until(
            lambda: sum(map(len, gpu_view(client.rt).free.values())) == 2 * len(bed.hosts),
            30,
            "every GPU free",
        )
        # Given host0's workers frozen while they still look alive
        os.killpg(frozen.worker.pid, signal.SIGSTOP)
        try:
            job = client.submit(
                JobSpec(
                    name="frozen",
                    nodes=2,
                    gpus=2,
                    max_retries=1,
                    command=[sys.executable, ALLREDUCE],
                )
            )
            # When the member placed on host0 never claims its part
            done = wait_for_job(client, job.id, lambda j: j.done, 120)
        finally:
            os.killpg(frozen.worker.pid, signal.SIGCONT)
        # Then the member that came waited the start timeout, the attempt was lost
        # naming the missing rank, and the retry ran on the hosts that answer
        assert done.succeeded, (done, _logs(bed))
        assert frozen.node not in done.nodes
        first = members_of(client.rt.registry, job.id, 1)
        assert [m.rank for m in first] == [1] and first[0].exit_reason == "lost"
        assert first[0].error == (
            f"rank 0 did not start within {bed.settings.gang_start_timeout:g} s"
        )
        # and host0's worker, thawed, finds its stale message claimed by no one:
        # it runs nothing
        wait_until(lambda: "placed again since" in bed.log(frozen), 60, "the stale message's skip")
        assert not (done.job_dir / "nodes" / frozen.node).exists()


@pytest.mark.timeout(240)
def test_a_pulled_cable_loses_the_gang_and_it_runs_again_on_the_hosts_still_up(
    bed: TestBed,
) -> None:
    settings = bed.settings
    with Client(settings) as client:
        job = client.submit(
            JobSpec(name="cable", nodes=2, gpus=2, max_retries=3, shell=True, command=[HOLD_FIRST])
        )
        wait_until(
            lambda: [bool(m.started_at) for m in _members(client, job.id)] == [True, True],
            60,
            "both members started",
            lambda: _logs(bed),
        )
        [_, far] = _members(client, job.id)
        cut = next(host for host in bed.hosts if host.node == far.node)
        # When the link of rank 1's host is pulled
        bed.pull_cable(cut)
        pulled = time.monotonic()
        try:
            wait_until(
                lambda: client.get(job.id).attempt >= 2 or client.get(job.id).done,
                60,
                "the gang to be declared lost and placed again",
                lambda: _logs(bed),
            )
            requeued_after = time.monotonic() - pulled
            # Then it was lost within the bound: the lease runs out, then the suspect
            # window, then a reconcile tick (plus a second of scheduling here)
            bound = (
                2 * settings.lease_ttl + settings.reconcile_interval + settings.heartbeat_interval
            )
            assert requeued_after <= bound + 3, requeued_after
            done = wait_for_job(client, job.id, lambda j: j.done, 90)
            assert done.succeeded, (done, _logs(bed))
            assert cut.node not in done.nodes, done.nodes
            first = members_of(client.rt.registry, job.id, 1)
            assert first[1].exit_reason == "lost" and "no heartbeat" in (first[1].error or "")
            assert first[0].exit_reason in ("stopped", "lost")  # fenced, or told to stop
        finally:
            bed.plug_cable(cut)
        # The cut-off member stops itself once it hears it was fenced: nothing of it
        # is left running
        wait_until(lambda: not _member_processes(job.id), 90, "the cut-off member to stop")


_GATED = 'while [ ! -e "$UGRO_JOB_DIR/go" ]; do sleep 0.05; done'
# Saves a checkpoint on SIGTERM; resumed, says from what, then runs until `go`.
_TRAINER = (
    'if [ -n "$UGRO_RESUME_FROM" ]; then echo "resumed from $(cat "$UGRO_RESUME_FROM")"; '
    'while [ ! -e "$UGRO_JOB_DIR/go" ]; do sleep 0.05; done; exit 0; fi; '
    "trap 'echo step-3 > \"$UGRO_CHECKPOINT_DIR/ckpt\"; exit 143' TERM; "
    "while true; do sleep 0.05; done"
)


@pytest.mark.timeout(180)
def test_beat_preempts_a_preemptible_gang_for_a_short_one_and_it_resumes(bed: TestBed) -> None:
    cluster = bed.settings.data_dir / "cluster.toml"
    kept = cluster.read_text() if cluster.exists() else None
    alice_settings = bed.settings.model_copy(update={"user": "alice"})
    bob_settings = bed.settings.model_copy(update={"user": "bob"})
    try:
        cluster.write_text(
            (kept or "") + "\n[sharing.preemption]\nafter_minutes = 0\nmin_run_minutes = 0\n"
        )
        with Client(alice_settings) as alice, Client(bob_settings) as bob:
            # Given alice's preemptible gang on two hosts and her plain job on the third
            train = alice.submit(
                JobSpec(
                    name="train", nodes=2, gpus=2, preemptible=True, shell=True, command=[_TRAINER]
                )
            )
            held = alice.submit(JobSpec(name="held", gpus=2, shell=True, command=[_GATED]))
            for job in (train, held):
                wait_for_job(alice, job.id, lambda j: j.status is JobStatus.RUNNING, 60)
            # When bob, who used nothing, queues a short job of two whole hosts
            quick = bob.submit(JobSpec(name="quick", nodes=2, gpus=2, timeout=60, command=["true"]))
            # Then beat's next look stops alice's gang for it, and it runs
            [ran] = bob.wait([quick.id], timeout=60)
            assert ran.succeeded, ran.error
            assert alice.get(held.id).status is JobStatus.RUNNING  # (not --preemptible)
            # and her gang resumes from its checkpoint on two hosts
            wait_for_job(
                alice, train.id, lambda j: j.status is JobStatus.RUNNING and j.attempt == 2, 60
            )
            (alice.rt.paths(train.id).root / "go").touch()
            (alice.rt.paths(held.id).root / "go").touch()
            done = alice.wait([train.id, held.id], timeout=60)
            attempts = alice.rt.registry.attempts(train.id)
            log = "".join(alice.logs(train.id, rank=0))
        assert all(job.succeeded for job in done), [(j.name, j.error) for j in done]
        assert [a.exit_reason for a in attempts] == ["preempted", "ok"]
        assert attempts[0].ended_at is not None and ran.started_at is not None
        assert attempts[0].ended_at <= ran.started_at
        assert "resumed from step-3" in log, log
    finally:
        if kept is None:
            cluster.unlink(missing_ok=True)
        else:
            cluster.write_text(kept)
