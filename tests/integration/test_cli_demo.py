"""`ugro demo` (what `make demo` runs) from start to finish, its output piped as in
`make demo | cat`."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN, ROOT, processes_of
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


@pytest.mark.timeout(240)
def test_the_demo_piped_prints_one_table_then_removes_its_directory(tmp_path: Path) -> None:
    result = run_demo(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # Piped, nothing is redrawn: the final table alone, and every line of the
    # output on a line of its own (none runs on past a table's bottom edge).
    output = result.stdout + result.stderr
    assert output.count("ugro demo:") == 1, result.stderr
    assert "ugro demo: results" in result.stdout
    assert result.stdout.count("finished") == 10  # the table's 9, the job across nodes
    bottom_edges = [line.rstrip() for line in output.splitlines() if "┘" in line]
    assert bottom_edges and all(line.endswith("┘") for line in bottom_edges), bottom_edges
    assert "submitted a sweep of 6 trainers\n" in result.stderr
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
    assert len(jobs) == 10
    trainers = [job for job in jobs if job.name.startswith("train-")]
    assert len(trainers) == 6
    for job in trainers:
        assert len(list(job.glob("epoch_*/validation_scores.json"))) == 8
        assert len((job / "metrics.jsonl").read_text().splitlines()) == 8
    for job in jobs:
        if job.name.startswith("eval-"):
            scores = json.loads((job / "evaluation_scores.json").read_text())
            assert 0.5 < scores["accuracy"] <= 1.0
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
