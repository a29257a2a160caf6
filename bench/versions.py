"""Two versions of ugro, alternated: `python -m bench.versions OLD NEW`.

OLD and NEW are source trees (`git worktree add /tmp/old <rev>`). Each round runs
W1 (latency) and W2 (throughput) once against each tree's ugro, in alternating
order, each on a fresh `ugro up` whose data dir is on tmpfs (`--tmp`, default
/dev/shm), so that no file system's quirks weigh on either side. The machine's
speed drifts by more than most changes: only versions alternated in one run
compare. Prints each run, then medians (min-max) and NEW/OLD.

Each tree is imported through a virtualenv of its own that shares this one's
packages (this venv's editable install would otherwise always import this
checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def tree_python(home: Path) -> Path:
    """A virtualenv in ``home`` whose packages are this one's, without the editable
    install of this checkout; ``ugro`` in its bin imports whatever PYTHONPATH holds."""
    python = home / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(home)], check=True)
        site = next(Path(sys.prefix).glob("lib/python3*/site-packages"))
        (next(home.glob("lib/python3*/site-packages")) / "shared.pth").write_text(f"{site}\n")
        script = home / "bin" / "ugro"
        script.write_text(f"#!{python}\nimport sys\nfrom ugro.cli import main\nsys.exit(main())\n")
        script.chmod(0o755)
    return python


def run_once(python: Path, tree: Path, tmp: Path, w1: int, w2: int) -> dict[str, float]:
    """W1 and W2 against ``tree``'s ugro in a process of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UGRO_")}
    env.update(PYTHONPATH=str(tree), TMPDIR=str(tmp))
    # This file by its path: the tree's own bench package (its adapters and
    # workloads) comes first on the path, so both versions run the workloads they ship.
    child = [str(python), __file__, "--child", str(w1), str(w2)]
    done = subprocess.run(child, env=env, cwd=tree, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: the run failed:\n{done.stderr[-3000:]}")
    figures: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return figures


def child(w1: int, w2: int) -> None:
    from bench.adapters import UgroAdapter, workdir
    from bench.workloads import w1_latency, w2_throughput

    root = workdir()
    ugro = UgroAdapter(2, root)
    ugro.start()
    try:
        figures = {
            **{f"w1_{k}": v for k, v in w1_latency(ugro, w1, root).items()},
            **{f"w2_{k}": v for k, v in w2_throughput(ugro, w2).items()},
        }
    finally:
        ugro.stop()
        subprocess.run(["rm", "-rf", str(root)], check=False)
    print(json.dumps(figures))


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(int(sys.argv[2]), int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--w1", type=int, default=200, help="W1's jobs")
    parser.add_argument("--w2", type=int, default=1000, help="W2's jobs")
    parser.add_argument("--tmp", type=Path, default=Path("/dev/shm"))
    args = parser.parse_args()
    python = tree_python(Path(tempfile.gettempdir()) / "ugro-bench-venv")
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    found: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    for round_ in range(args.rounds):
        order = ["old", "new"] if round_ % 2 == 0 else ["new", "old"]
        for name in order:
            figures = run_once(python, trees[name], args.tmp, args.w1, args.w2)
            found[name].append(figures)
            shown = ", ".join(f"{k}={v:.2f}" for k, v in figures.items() if _shown(k))
            print(f"round {round_} {name}: {shown}", flush=True)
    print(report(found))


def _shown(key: str) -> bool:
    return key in ("w1_start_p50_ms", "w1_start_p99_ms", "w2_jobs_per_s")


def report(found: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["| metric | old | new | new/old |", "| --- | --- | --- | --- |"]
    for key in ("w1_start_p50_ms", "w1_start_p99_ms", "w1_finish_p50_ms", "w2_jobs_per_s"):
        old = [f[key] for f in found["old"]]
        new = [f[key] for f in found["new"]]
        lines.append(
            f"| {key} | {_cell(old)} | {_cell(new)} | "
            f"{statistics.median(new) / statistics.median(old):.3f} |"
        )
    return "\n".join(lines)


def _cell(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


if __name__ == "__main__":
    main()
