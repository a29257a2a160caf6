"""`ugro demo` (what `make demo` runs) from start to finish, its output piped as in
`make demo | cat`."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN, ROOT, processes_of
from ugro.cli.demo import EPOCHS, LEARNING_RATES
from ugro.client import Client
from ugro.settings import Settings


def run_demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`ugro demo` with stdout and stderr pipes; its temporary directory under ``tmp_path``."""
    return subprocess.run(
        [str(BIN / "ugro"), "demo", *args],
        capture_output=True,
        text=True,
        timeout=220,
        cwd=ROOT,
        env={
            "PATH": str(BIN) + ":/usr/bin:/bin",
            "HOME": str(tmp_path),
            "TMPDIR": str(tmp_path),
        },
    )


def demo_dirs(tmp_path: Path) -> list[Path]:
    return sorted(tmp_path.glob("ugro-demo-*"))


#: What each rank of the job across nodes prints (examples/allreduce.py).
RANK_LINE = re.compile(r"^rank (\d) of 4 on (\S+): sum 6$")


def rank_lines(stdout: str) -> dict[int, str]:
    """The node of each rank line the demo printed, by rank."""
    found = (RANK_LINE.match(line.strip()) for line in stdout.splitlines())
    return {int(match[1]): match[2] for match in found if match}


#: A row of the final table: a sweep point's or the evaluation's name, status, best score.
ROW = re.compile(r"^│ (lr-sweep\[\d\] lr=\S+|eval-best) +│ (\w+) +│.*│ ([0-9.]+|-) +│ [^│]+│$")
#: The report's line on the evaluation of the sweep's best point.
EVALUATED = re.compile(
    r"^eval-best ran after all 6 points and evaluated (lr-sweep\[\d\] lr=\S+)"
    r" \((lr-sweep-[0-9a-f]+-\d), epoch_(\d+)\.npz\): test accuracy (0\.\d+) on 500 examples$",
    re.MULTILINE,
)


def table_rows(stdout: str) -> list[tuple[str, str, str]]:
    """(name, status, best score) of each row of the final table, in its order."""
    found = (ROW.match(line.rstrip()) for line in stdout.splitlines())
    return [(match[1], match[2], match[3]) for match in found if match]


@pytest.mark.timeout(240)
def test_the_demo_piped_prints_one_table_then_removes_its_directory(tmp_path: Path) -> None:
    result = run_demo(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # Piped, nothing is redrawn: the final table alone, and every line of the
    # output on a line of its own (none runs on past a table's bottom edge).
    output = result.stdout + result.stderr
    assert output.count("ugro demo:") == 1, result.stderr
    assert "ugro demo: results" in result.stdout
    bottom_edges = [line.rstrip() for line in output.splitlines() if "┘" in line]
    assert bottom_edges and all(line.endswith("┘") for line in bottom_edges), bottom_edges
    assert re.search(
        r"^submitted sweep lr-sweep-[0-9a-f]+: 6 trainers, lr in ", result.stderr, re.M
    )
    # The table: the sweep's six points, best score first, then the evaluation of
    # the best of them, every one finished; the report names the point evaluated,
    # the table's first, and its test accuracy.
    rows = table_rows(result.stdout)
    assert [name for name, _, _ in rows][-1:] == ["eval-best"], result.stdout
    assert all(status == "finished" for _, status, _ in rows) and len(rows) == 7, rows
    scores = [float(score) for _, _, score in rows[:-1]]
    assert scores == sorted(scores, reverse=True), rows
    [evaluated] = EVALUATED.findall(result.stdout)
    assert evaluated[0] == rows[0][0] and int(evaluated[2]) == EPOCHS - 1, result.stdout
    assert re.search(rf"^sweep {evaluated[1][:-2]} \(sweep\): 6 finished;", result.stdout, re.M)
    # The job across nodes ran: each of its 4 ranks printed its line, 2 on each of
    # two nodes, and its tree has a folder for each node.
    assert "allreduce-2x2 finished, its tree in jobs/allreduce-2x2-" in result.stdout
    nodes = rank_lines(result.stdout)
    assert sorted(nodes) == [0, 1, 2, 3], result.stdout
    assert len(set(nodes.values())) == 2 and nodes[0] == nodes[1] != nodes[2] == nodes[3]
    for node in set(nodes.values()):
        for name in ("metadata.json", "console.log"):
            assert f"  nodes/{node}/{name}\n" in result.stdout
    for rank in range(4):
        assert f"  logs/rank_{rank}.log\n" in result.stdout
    # The directory it made is gone, and it says so and how to keep it.
    assert demo_dirs(tmp_path) == [], result.stderr[-1000:]
    assert "ugro demo --keep" in result.stderr.splitlines()[-1]
    made = Path(result.stderr.splitlines()[0].removeprefix("data dir: "))
    assert made.parent == tmp_path and made.name.startswith("ugro-demo-")
    assert processes_of(Settings(data_dir=made)) == []


@pytest.mark.timeout(240)
def test_the_demo_kept_leaves_its_results_where_it_says_and_no_process(tmp_path: Path) -> None:
    result = run_demo(tmp_path, "--keep")
    assert result.returncode == 0, result.stderr[-3000:]
    [data] = demo_dirs(tmp_path)
    assert f"rm -rf {data}" in result.stderr.splitlines()[-1]
    jobs = sorted((data / "jobs").iterdir())
    assert len(jobs) == 8  # the sweep's 6 points, its evaluation, the job across nodes
    settings = Settings(data_dir=data, redis_url=None, database_url=None)
    with Client(settings, connect=False) as client:
        # The sweep ran as one: an array of kind "sweep" over lr, a task a rate.
        [array] = client.arrays()
        [evaluation] = [job for job in client.list() if job.kind == "eval"]
    assert (array.kind, array.count, array.params) == ("sweep", 6, ["lr"])
    assert array.status.value == "finished" and array.counts == {"finished": 6}
    assert [task.params for task in array.tasks] == [{"lr": lr} for lr in LEARNING_RATES]
    for task in array.tasks:
        assert task.job_dir.parent == data / "jobs" and task.kind == "train"
        assert len(list(task.job_dir.glob("epoch_*/validation_scores.json"))) == EPOCHS
        assert len(task.paths.metrics.read_text().splitlines()) == EPOCHS
        config = json.loads(task.paths.config.read_text())
        assert config["spec"]["params"] == task.params
    # Its evaluation waited on the whole sweep, started once every point had ended,
    # and scored the best point's newest checkpoint.
    assert json.loads(evaluation.paths.config.read_text())["spec"]["after"] == [array.id]
    assert evaluation.succeeded and evaluation.started_at is not None
    assert all(
        task.finished_at is not None and task.finished_at <= evaluation.started_at
        for task in array.tasks
    )
    ranked = {
        (task.progress.best_score, -(task.array_index or 0)): task
        for task in array.tasks
        if task.progress is not None and task.progress.best_score is not None
    }
    assert len(ranked) == 6
    best = ranked[max(ranked)]
    scores = json.loads(evaluation.paths.evaluation_scores.read_text())
    assert scores["sweep"] == array.id and scores["point"] == best.id
    assert scores["params"] == best.params
    assert scores["checkpoint"] == str(best.paths.checkpoint(f"epoch_{EPOCHS - 1}.npz"))
    assert scores["model"] == "checkpoint" and 0.5 < scores["accuracy"] <= 1.0
    log = evaluation.paths.training_log.read_text()
    assert f"sweep {array.id}: best of 6 finished points (of 6) is {best.id} (lr=" in log
    assert f"point {best.id}: checkpoint {scores['checkpoint']} (epoch {EPOCHS - 1}):" in log
    assert f"({best.id}, epoch_{EPOCHS - 1}.npz): test accuracy {scores['accuracy']:.3f}" in (
        result.stdout
    )
    # The job across nodes: two nodes' folders, every rank's log, distributed
    [gang] = [job for job in jobs if job.name.startswith("allreduce-2x2-")]
    metadata = json.loads((gang / "metadata.json").read_text())
    assert metadata["distributed"] is True and metadata["exit_code"] == 0
    nodes = sorted(member["node"] for member in metadata["nodes"])
    assert len(set(nodes)) == 2
    assert sorted(node.name for node in (gang / "nodes").iterdir()) == nodes
    for node in nodes:
        assert json.loads((gang / "nodes" / node / "metadata.json").read_text())["distributed"]
    outputs = [(gang / "logs" / f"rank_{r}.log").read_text().strip() for r in range(4)]
    assert rank_lines("\n".join(outputs)).keys() == {0, 1, 2, 3}, outputs
    assert processes_of(Settings(data_dir=data)) == []
