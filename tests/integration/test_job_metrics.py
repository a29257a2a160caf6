"""A job's metrics back, on one shared stack: `Client.metrics`, `ugro metrics` as a
table, CSV and JSON lines, followed while the job logs; `ugro compare` and
`ugro tensorboard` over several jobs."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    BIN,
    env_for,
    make_settings,
    registry_database,
    running_stack,
    ugro,
)
from ugro import Client, JobSpec, JobStatus
from ugro.settings import Settings

PY = sys.executable
# A job that logs one record a line of its argv: step and JSON values.
LOGS = """
import json, sys, ugro
for step, values in enumerate(sys.argv[1:]):
    ugro.log_metrics(step=step, **json.loads(values))
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    root = tmp_path_factory.mktemp("metrics")
    with registry_database(root) as url:
        settings = make_settings(root / "data", url, gpu_backend="fake:2")
        with running_stack(settings) as running:
            yield running


def logged(client: Client, name: str, *records: dict[str, object]) -> str:
    """A job that logged these records, ended."""
    argv = [PY, "-c", LOGS, *map(json.dumps, records)]
    job = client.submit(JobSpec(name=name, command=argv))
    [ended] = client.wait(job.id, timeout=30)
    assert ended.status is JobStatus.FINISHED, ended.error
    return job.id


@pytest.mark.timeout(60)
def test_the_records_come_back_from_the_client_and_as_a_table_csv_and_json(
    lab: Settings, client: Client
) -> None:
    # Given a job that logged three steps, and a line cut short at the end
    rows = [{"loss": 0.9, "lr": 0.1}, {"loss": 0.5, "lr": 0.1}, {"loss": 0.4, "acc": 0.8}]
    job_id = logged(client, "logs", *rows)
    with client.get(job_id).paths.metrics.open("a") as handle:
        handle.write('{"step": 3, "loss": 0.3')
    # When the client reads them, Then it has them in order, the cut line skipped
    records = client.metrics(job_id)
    assert [{k: v for k, v in r.items() if k not in ("step", "time")} for r in records] == rows
    assert [r["step"] for r in records] == [0, 1, 2] and all("time" in r for r in records)
    assert client.metrics(job_id, last=1) == records[-1:]
    # and `ugro metrics` prints a table: step and time first, a dash where a field is missing
    table = ugro(lab, "metrics", job_id)
    assert table.returncode == 0, table.stderr
    header, *lines = table.stdout.splitlines()
    assert header.split() == ["STEP", "TIME", "LOSS", "LR", "ACC"]
    assert [line.split()[2:] for line in lines] == [
        ["0.9", "0.1", "-"],
        ["0.5", "0.1", "-"],
        ["0.4", "-", "0.8"],
    ]
    # CSV with the values as logged, and JSON lines
    printed = ugro(lab, "metrics", job_id, "--csv", "--last", "2")
    parsed = list(csv.DictReader(io.StringIO(printed.stdout)))
    assert [(r["step"], r["loss"], r["acc"]) for r in parsed] == [
        ("1", "0.5", ""),
        ("2", "0.4", "0.8"),
    ]
    assert float(parsed[0]["time"]) == records[1]["time"]
    lines = ugro(lab, "metrics", job_id, "--json").stdout.splitlines()
    assert [json.loads(line) for line in lines] == records


@pytest.mark.timeout(60)
def test_follow_prints_each_record_as_it_is_logged_and_stops_when_the_job_ends(
    lab: Settings, client: Client, tmp_path: Path
) -> None:
    # Given a running job that logged one record and waits for a go to log another
    go = tmp_path / "go"
    script = (
        "import os, time, ugro\n"
        "ugro.log_metrics(step=0, loss=1.0)\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.05)\n"
        "ugro.log_metrics(step=1, loss=0.5, acc=0.7)\n"
    )
    job = client.submit(JobSpec(name="follows", command=[PY, "-c", script]))
    # When `ugro metrics --follow --csv` runs
    follower = subprocess.Popen(
        [str(BIN / "ugro"), "metrics", job.id, "--follow", "--csv"],
        env=env_for(lab),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        # Then the first record shows while the job still runs
        assert follower.stdout.readline().strip() == "step,time,loss"
        assert follower.stdout.readline().startswith("0,")
        assert client.get(job.id).status is JobStatus.RUNNING
        # and the next as it is logged (a new field: a new header), then it ends with the job
        go.touch()
        rest, errors = follower.communicate(timeout=30)
    finally:
        follower.kill()
    assert follower.returncode == 0, errors
    header, row = rest.splitlines()
    assert header == "step,time,loss,acc" and row.startswith("1,") and row.endswith(",0.5,0.7")
    assert client.get(job.id).status is JobStatus.FINISHED


@pytest.mark.timeout(60)
def test_compare_shows_each_metrics_final_and_best_side_by_side(
    lab: Settings, client: Client
) -> None:
    # Given two runs: a loss (lower is better), an accuracy (higher) and a learning rate
    first = logged(
        client,
        "cmp-a",
        {"val_loss": 0.8, "val_acc": 0.6, "lr": 0.1},
        {"val_loss": 0.5, "val_acc": 0.9, "lr": 0.01},
        {"val_loss": 0.6, "val_acc": 0.8, "lr": 0.001},
    )
    second = logged(client, "cmp-b", {"val_loss": 0.7, "val_acc": 0.7}, {"val_loss": 0.4})
    # When they are compared
    result = ugro(lab, "compare", first, second, "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    # Then each metric has its final value and its best, with the step it was reached
    a, b = found[first], found[second]
    assert (a["val_loss"]["final"], a["val_loss"]["best"], a["val_loss"]["best_step"]) == (
        0.6,
        0.5,
        1,
    )
    assert (a["val_acc"]["final"], a["val_acc"]["best"], a["val_acc"]["best_step"]) == (0.8, 0.9, 1)
    assert (a["lr"]["final"], a["lr"]["best"], a["lr"]["direction"]) == (0.001, None, None)
    assert (b["val_loss"]["best"], b["val_acc"]["final"], "lr" in b) == (0.4, 0.7, False)
    # and the table puts the jobs side by side, a row a metric
    table = ugro(lab, "compare", first, second).stdout.splitlines()
    assert table[0].split() == ["METRIC", "BETTER", first, second]
    rows = {line.split()[0]: line for line in table[1:]}
    assert rows["val_loss"].split()[1] == "lower" and "0.6 (best 0.5 @1)" in rows["val_loss"]
    assert rows["val_acc"].split()[1] == "higher" and "0.8 (best 0.9 @1)" in rows["val_acc"]
    assert rows["lr"].split()[1:] == ["-", "0.001", "-"]


@pytest.mark.timeout(60)
def test_tensorboard_names_each_jobs_dir_in_one_logdir_spec(lab: Settings, client: Client) -> None:
    # Given a job that wrote TensorBoard files and one that did not
    writes = (
        "import os, pathlib\n"
        "pathlib.Path(os.environ['UGRO_TENSORBOARD_DIR'], 'events.out').write_text('x')"
    )
    wrote = client.submit(JobSpec(name="tb", command=[PY, "-c", writes]))
    quiet = client.submit(JobSpec(name="no-tb", command=[PY, "-c", "pass"]))
    client.wait([wrote.id, quiet.id], timeout=30)
    tb = {job.id: job.paths.tensorboard for job in client.get_many([wrote.id, quiet.id])}
    # When `ugro tensorboard` names no job, Then it lists those with files
    every = ugro(lab, "tensorboard")
    assert every.returncode == 0, every.stderr
    assert every.stdout.split() == ["tensorboard", f"--logdir_spec={wrote.id}:{tb[wrote.id]}"]
    # and named jobs are listed in the order given, a warning for one without files
    named = ugro(lab, "tensorboard", quiet.id, wrote.id)
    spec = f"--logdir_spec={quiet.id}:{tb[quiet.id]},{wrote.id}:{tb[wrote.id]}"
    assert named.stdout.split() == ["tensorboard", spec]
    assert f"job {quiet.id} has no TensorBoard files yet" in named.stderr


@pytest.mark.timeout(60)
def test_a_data_frame_when_pandas_is_installed_and_a_clear_error_when_not(
    client: Client,
) -> None:
    job_id = logged(client, "frame", {"loss": 0.9}, {"loss": 0.5})
    if importlib.util.find_spec("pandas") is None:
        with pytest.raises(ImportError, match="pip install pandas"):
            client.metrics_frame(job_id)
        return
    frame = client.metrics_frame(job_id)
    assert list(frame["step"]) == [0, 1] and list(frame["loss"]) == [0.9, 0.5]


@pytest.mark.timeout(30)
def test_a_job_without_metrics_says_so_and_a_bad_last_is_refused(
    lab: Settings, client: Client
) -> None:
    job = client.submit(JobSpec(name="silent", command=[PY, "-c", "pass"]))
    client.wait(job.id, timeout=30)
    empty = ugro(lab, "metrics", job.id)
    assert (empty.returncode, empty.stdout) == (0, "")
    assert "has logged no metrics yet" in empty.stderr
    bad = ugro(lab, "metrics", job.id, "--last", "0")
    assert bad.returncode == 2 and "--last" in bad.stderr
