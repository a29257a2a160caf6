"""Workflows on one stack of 4 simulated GPUs: dependencies, arrays, sweeps, and
who submitted a job.

Beat's reconcile tick is a minute here: what a test sees happen at a job's end is
the end's own doing, not the reconciler's safety net.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator

import pytest

from tests.conftest import (
    ROOT,
    env_for,
    make_settings,
    registry_database,
    running_stack,
    ugro,
    wait_until,
)
from ugro import Client, JobSpec, JobStatus
from ugro.execution.reconcile import reconcile
from ugro.settings import Settings

PY = sys.executable
# Runs until its folder has a file `go`, then exits with $CODE (default 0).
UNTIL_GO = 'while [ ! -e "$UGRO_JOB_DIR/go" ]; do sleep 0.05; done; exit "${CODE:-0}"'


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    root = tmp_path_factory.mktemp("workflows")
    with registry_database(root) as url:
        settings = make_settings(root / "data", url, reconcile_interval=60.0)
        with running_stack(settings) as running:
            yield running


def gated(name: str, code: int = 0, **spec: object) -> JobSpec:
    env = {"CODE": str(code)}
    return JobSpec(name=name, command=[UNTIL_GO], shell=True, env=env, **spec)  # type: ignore[arg-type]


def go(client: Client, job_id: str) -> None:
    (client.rt.paths(job_id).root / "go").touch()


def quick(name: str, **spec: object) -> JobSpec:
    return JobSpec(name=name, command=["true"], **spec)  # type: ignore[arg-type]


def status_of(client: Client, job_id: str) -> JobStatus:
    return client.get(job_id).status


@pytest.mark.timeout(90)
def test_a_chain_runs_each_step_after_the_one_before_finished(
    client: Client, lab: Settings
) -> None:
    train = client.submit(gated("train"))
    # Given eval after train and report after eval, submitted as a user types them
    sub = ugro(lab, "submit", "--name", "eval", "--after", train.id, "--", "true")
    assert sub.returncode == 0, sub.stderr
    evaluate = sub.stdout.strip()
    report = client.submit(quick("report", after=[evaluate]))
    wait_until(lambda: status_of(client, train.id) is JobStatus.RUNNING, 30, "train running")
    # then eval waits, saying for what, while train runs
    assert client.get(evaluate).hold == "after"
    assert client.why_waiting(evaluate) == f"waiting for {train.id} (running)"
    shown = ugro(lab, "status", evaluate)
    assert f"waiting for {train.id} (running)" in shown.stdout, shown.stdout
    assert status_of(client, report.id) is JobStatus.QUEUED
    # When train finishes, eval runs after it, then report after eval
    go(client, train.id)
    done = client.wait([train.id, evaluate, report.id], timeout=60)
    assert all(job.succeeded for job in done), done
    first, second, third = done
    assert first.finished_at and second.started_at and second.finished_at and third.started_at
    assert first.finished_at <= second.started_at and second.finished_at <= third.started_at


@pytest.mark.timeout(90)
def test_a_failed_step_cancels_the_rest_of_the_chain_at_once(client: Client) -> None:
    train = client.submit(gated("train", code=3))
    evaluate = client.submit(quick("eval", after=[train.id]))
    report = client.submit(quick("report", after=[evaluate.id]))
    cleanup = client.submit(quick("cleanup", after_any=[train.id]))
    alert = client.submit(quick("alert", after_failed=[train.id]))
    wait_until(lambda: status_of(client, train.id) is JobStatus.RUNNING, 30, "train running")
    go(client, train.id)
    [failed] = client.wait(train.id, timeout=30)
    assert failed.status is JobStatus.FAILED
    # Within the end's own pass (the reconciler's tick is a minute away): eval and
    # report cancelled, reason dependency, each naming the job that broke the chain
    [eval_done, report_done] = client.wait([evaluate.id, report.id], timeout=5)
    for job, cause in ((eval_done, train.id), (report_done, evaluate.id)):
        assert job.status is JobStatus.CANCELLED and job.exit_reason == "dependency", job
        assert job.attempt == 0
        console = client.rt.paths(job.id).console.read_text()
        assert f"cancelled: its dependency {cause}" in console, console
    # while the jobs that wait on any end, or on a failure, run
    assert all(job.succeeded for job in client.wait([cleanup.id, alert.id], timeout=30))


@pytest.mark.timeout(60)
def test_after_failed_never_runs_when_the_job_finished_ok(client: Client) -> None:
    train = client.submit(quick("train"))
    alert = client.submit(quick("alert", after_failed=[train.id]))
    [done] = client.wait(alert.id, timeout=30)
    assert done.status is JobStatus.CANCELLED and done.exit_reason == "dependency"
    assert "it waited for failed" in (done.error or "")


@pytest.mark.timeout(60)
def test_unknown_dependencies_and_cycles_are_refused_and_create_nothing(
    client: Client, lab: Settings
) -> None:
    before = {job.id for job in client.list()}
    unknown = ugro(lab, "submit", "--name", "x", "--after", "nosuch-1234", "--", "true")
    assert unknown.returncode == 2 and "no job or array 'nosuch-1234'" in unknown.stderr
    bad = ugro(lab, "submit", "--name", "x", "--after", "../etc", "--", "true")
    assert bad.returncode == 2 and "after" in bad.stderr, bad.stderr
    # a batch whose jobs wait on each other (by name, as a pipeline submitted at once)
    from ugro.errors import SpecError

    cycle = [quick("a", after=["c"]), quick("b", after=["a"]), quick("c", after=["b"])]
    with pytest.raises(SpecError, match=r"wait on each other in a cycle: a -> c -> b -> a"):
        client.submit_many(cycle)
    assert {job.id for job in client.list()} == before
    assert not [p for p in lab.jobs_dir.iterdir() if p.name.startswith(("a-", "b-", "c-", "x-"))]
    # the same batch without the cycle is a pipeline: all in one commit
    jobs = client.submit_many([quick("a"), quick("b", after=["a"]), quick("c", after=["b"])])
    assert all(job.succeeded for job in client.wait([job.id for job in jobs], timeout=30))


@pytest.mark.timeout(90)
def test_dependencies_survive_a_redis_wipe(client: Client) -> None:
    train = client.submit(gated("train"))
    evaluate = client.submit(quick("eval", after=[train.id]))
    wait_until(lambda: status_of(client, train.id) is JobStatus.RUNNING, 30, "train running")
    # When Redis loses everything and the reconciler rebuilds it
    client.rt.live.redis.flushall()
    reconcile(client.rt)
    # eval is still held by the registry: not queued live, not run
    assert client.get(evaluate.id).hold == "after"
    assert evaluate.id not in client.rt.live.queued_ids()
    go(client, train.id)
    assert all(job.succeeded for job in client.wait([train.id, evaluate.id], timeout=60))


@pytest.mark.timeout(120)
def test_an_array_of_50_never_runs_more_than_3_at_once_and_all_finish(
    client: Client, lab: Settings
) -> None:
    record = 'echo "$UGRO_ARRAY_INDEX $UGRO_ARRAY_COUNT {index}" > "$UGRO_JOB_DIR/me"'
    sub = ugro(
        lab, "submit", "--name", "arr", "--array", "0-49", "--max-running", "3", "--",
        "sh", "-c", f"{record}; sleep 0.2",
    )  # fmt: skip
    assert sub.returncode == 0, sub.stderr
    array_id = sub.stdout.strip()
    most = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal most
        while not stop.wait(0.05):
            statuses = client.rt.registry.statuses([f"{array_id}-{i}" for i in range(50)])
            busy = sum(s in ("placed", "running") for s in statuses.values())
            most = max(most, busy)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        waited = ugro(lab, "wait", array_id, timeout=100)
    finally:
        stop.set()
        sampler.join(5)
    assert waited.returncode == 0, waited.stderr
    array = client.get_array(array_id)
    assert array.count == 50 and array.counts == {"finished": 50}
    assert 1 <= most <= 3, most
    for task in array.tasks:
        index = task.array_index
        assert (task.job_dir / "me").read_text().split() == [str(index), "50", str(index)]
    listed = ugro(lab, "list")
    [row] = [line for line in listed.stdout.splitlines() if array_id in line]
    assert "finished" in row and "50 tasks" in row and "100%" in row, row
    shown = ugro(lab, "status", array_id)
    assert f"{array_id}: array of 50 tasks, at most 3 at once" in shown.stdout, shown.stdout
    assert "finished (50 finished), 100% done" in shown.stdout
    expanded = ugro(lab, "list", "--expand", "--limit", "200")
    assert sum(f"{array_id}-" in line for line in expanded.stdout.splitlines()) == 50


@pytest.mark.timeout(120)
def test_a_grid_sweep_runs_every_point_once_and_ranks_them_by_score(
    client: Client, lab: Settings
) -> None:
    sweep = ugro(lab, "sweep", str(ROOT / "examples" / "sweep.yaml"), cwd=ROOT)
    assert sweep.returncode == 0, sweep.stderr
    sweep_id = sweep.stdout.strip()
    waited = ugro(lab, "wait", sweep_id, timeout=100)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    array = client.get_array(sweep_id)
    assert array.kind == "sweep" and array.params == ["lr", "seed"] and array.count == 9
    points = set()
    for task in array.tasks:
        config = json.loads(task.paths.config.read_text())
        params = config["spec"]["params"]
        points.add((params["lr"], params["seed"]))
        command = config["spec"]["command"]
        assert command[command.index("--lr") + 1] == str(params["lr"])
    assert len(points) == 9
    shown = ugro(lab, "sweep", "status", sweep_id, "--json")
    assert shown.returncode == 0, shown.stderr
    ranked = json.loads(shown.stdout)["points"]
    scores = [point["best_score"] for point in ranked]
    assert None not in scores and scores == sorted(scores, reverse=True)
    table = ugro(lab, "sweep", "status", sweep_id)
    assert "LR" in table.stdout and "SEED" in table.stdout, table.stdout
    expanded = ugro(lab, "list", "--expand", "--limit", "100").stdout
    assert "lr-sweep lr=0.03 seed=0" in expanded and "lr-sweep lr=0.3 seed=2" in expanded


@pytest.mark.timeout(90)
def test_a_job_after_an_array_waits_for_every_task(client: Client) -> None:
    # task 1 fails: --after the array never runs, --after-any runs once all ended
    spec = JobSpec(name="three", command=['exit "$(( {index} == 1 ))"'], shell=True)
    array = client.submit_array(spec, [0, 1, 2], max_running=1)
    after = client.submit(quick("after", after=[array.id]))
    after_any = client.submit(quick("any", after_any=[array.id]))
    done = client.wait([after.id, after_any.id], timeout=60)
    tasks = client.get_array(array.id).tasks
    assert [t.status.value for t in tasks] == ["finished", "failed", "finished"]
    assert done[0].status is JobStatus.CANCELLED and done[0].exit_reason == "dependency"
    assert f"its dependency {array.id} failed" in (done[0].error or "")
    assert done[1].succeeded
    last_end = max(t.finished_at for t in tasks if t.finished_at is not None)
    assert done[1].started_at is not None and done[1].started_at >= last_end


@pytest.mark.timeout(90)
def test_jobs_are_attributed_listed_by_user_and_guarded_from_others(lab: Settings) -> None:
    def as_user(user: str, *args: str) -> tuple[int, str, str]:
        env = env_for(lab) | {"UGRO_USER": user}
        done = ugro(lab, *args, env=env)
        return done.returncode, done.stdout, done.stderr

    hold = ["--", "sleep", "60"]
    code, alice_job, _ = as_user("alice", "submit", "--name", "a", "--group", "vision", *hold)
    assert code == 0
    code, bob_job, _ = as_user("bob", "submit", "--name", "b", *hold)
    assert code == 0
    alice_job, bob_job = alice_job.strip(), bob_job.strip()

    code, out, _ = as_user("alice", "list", "--json", "--mine")
    assert [job["id"] for job in json.loads(out)] == [alice_job]
    assert json.loads(out)[0]["user"] == "alice" and json.loads(out)[0]["group"] == "vision"
    code, out, _ = as_user("alice", "list", "--json", "--user", "bob")
    assert [job["id"] for job in json.loads(out)] == [bob_job]
    code, out, _ = as_user("bob", "list", "--json", "--group", "vision")
    assert [job["id"] for job in json.loads(out)] == [alice_job]

    # Acting on another's job asks for --force, and changes nothing without it
    code, _, err = as_user("alice", "cancel", "--no-wait", bob_job)
    assert code == 2 and f"{bob_job} is bob's: add --force to cancel it" in err, err
    code, _, err = as_user("alice", "cancel", bob_job, "--force")
    assert code == 0, err
    code, _, err = as_user("alice", "cancel", alice_job)
    assert code == 0, err


@pytest.mark.timeout(90)
def test_an_array_is_cancelled_and_retried_as_one(client: Client, lab: Settings) -> None:
    # Given a capped array: its first task running, the others held for a slot
    # (no ${...} in an array's argv: its braces would be placeholders)
    until_go = 'while [ ! -e "$UGRO_JOB_DIR/go" ]; do sleep 0.05; done'
    gated_task = JobSpec(name="held", command=[until_go], shell=True)
    array = client.submit_array(gated_task, range(4), max_running=1)
    first = f"{array.id}-0"
    wait_until(lambda: status_of(client, first) is JobStatus.RUNNING, 30, "task 0 running")
    # When the array is cancelled, every task is, the running one stopped, and no
    # held one took the freed slot
    cancelled = ugro(lab, "cancel", array.id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"{array.id}: 4 cancelled" in cancelled.stderr, cancelled.stderr
    tasks = client.get_array(array.id).tasks
    assert [t.status for t in tasks] == [JobStatus.CANCELLED] * 4
    assert [t.attempt for t in tasks] == [1, 0, 0, 0]
    # And a retry of an array queues its failed tasks only, again under its cap
    failing = JobSpec(name="fails", command=['exit "$(( {index} == 1 ))"'], shell=True)
    again = client.submit_array(failing, range(3), max_running=1)
    client.wait(again.id, timeout=60)
    retried = ugro(lab, "retry", again.id)
    assert retried.returncode == 0 and "1 failed task(s) queued again" in retried.stderr
    done = client.wait(again.id, timeout=60)
    assert [(t.status.value, t.attempt) for t in done] == [
        ("finished", 1),
        ("failed", 2),
        ("finished", 1),
    ]
