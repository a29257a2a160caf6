"""Example ugro job: evaluate a train.py checkpoint (or a quick baseline) on the test split.

With ``--sweep`` it evaluates the newest checkpoint of a ugro sweep's best point. Writes
``<out>/evaluation_scores.json`` and prints a one-line summary. See README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from toy_model import (  # noqa: E402
    MLP,
    N_FEATURES,
    SGDMomentum,
    atomic_write_json,
    latest_checkpoint,
    load_checkpoint,
    make_dataset,
    train_epoch,
)

BASELINE_EPOCHS = 3
BASELINE_LR = 0.1
BASELINE_BATCH_SIZE = 64


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="an epoch_<n>.npz written by train.py; without it a baseline is fitted",
    )
    p.add_argument(
        "--sweep",
        metavar="SWEEP_ID",
        default=None,
        help="a ugro sweep of train.py: evaluate the newest checkpoint of its best point",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for the baseline fit")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default: $UGRO_JOB_DIR, else the current directory)",
    )
    p.add_argument("--seconds", type=float, default=0.0, help="extra sleep, for demos")
    args = p.parse_args(argv)
    if args.seconds < 0:
        p.error("--seconds must not be negative")
    if args.checkpoint is not None and args.sweep is not None:
        p.error("give --checkpoint or --sweep, not both")
    if args.out is None:
        args.out = Path(os.environ.get("UGRO_JOB_DIR") or os.getcwd())
    return args


class SweepPoint(NamedTuple):
    """A sweep's best point: its job, parameters, validation score and newest checkpoint."""

    sweep: str
    job_id: str
    params: dict[str, Any]
    score: float
    score_name: str | None
    checkpoint: Path
    finished: int
    points: int

    def describe(self) -> str:
        params = ", ".join(f"{name}={value}" for name, value in self.params.items())
        score = f"best validation {self.score_name or 'score'} {self.score:.3f}"
        return (
            f"sweep {self.sweep}: best of {self.finished} finished points (of {self.points})"
            f" is {self.job_id} ({params or 'no parameters'}), {score}"
        )


class SweepError(Exception):
    """The sweep cannot be read, or has no point to evaluate."""


def best_point(sweep_id: str) -> SweepPoint:
    """The finished point of ``sweep_id`` with the highest best score (the lowest
    index among equals), read through ugro's client.

    Raises:
        SweepError: ugro is not importable, the sweep is unknown, or no finished
            point has a score and a checkpoint.
    """
    try:
        from ugro import Client, UgroError
    except ImportError as e:
        raise SweepError(f"--sweep needs the ugro package, which cannot be imported: {e}") from e
    try:
        with Client(connect=False) as client:
            array = client.get_array(sweep_id)
    except UgroError as e:
        raise SweepError(str(e)) from e
    scored = [
        (task.progress.best_score, -(task.array_index or 0), task)
        for task in array.tasks
        if task.succeeded and task.progress is not None and task.progress.best_score is not None
    ]
    if not scored:
        raise SweepError(f"sweep {sweep_id}: no finished point has a score yet")
    score, _, task = max(scored, key=lambda entry: entry[:2])
    assert task.progress is not None  # (only scored tasks are listed)
    checkpoint = latest_checkpoint(task.paths.checkpoints)
    if checkpoint is None:
        raise SweepError(f"sweep {sweep_id}: its best point {task.id} left no epoch_<n>.npz")
    return SweepPoint(
        sweep=array.id,
        job_id=task.id,
        params={name: task.params[name] for name in array.params if name in task.params},
        score=score,
        score_name=task.progress.score_name,
        checkpoint=checkpoint,
        finished=len(scored),
        points=len(array.tasks),
    )


def fit_baseline(seed: int) -> MLP:
    train = make_dataset()["train"]
    rng = np.random.default_rng(seed)
    model = MLP.init(rng)
    opt = SGDMomentum.for_model(model, lr=BASELINE_LR)
    for _ in range(BASELINE_EPOCHS):
        train_epoch(model, opt, train, BASELINE_BATCH_SIZE, rng)
    return model


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    test = make_dataset()["test"]

    point: SweepPoint | None = None
    if args.sweep is not None:
        try:
            point = best_point(args.sweep)
        except SweepError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            return 2
        print(point.describe(), flush=True)
        args.checkpoint = point.checkpoint

    if args.checkpoint is not None:
        try:
            ckpt = load_checkpoint(args.checkpoint)
        except (OSError, KeyError, ValueError) as e:
            print(f"error: cannot load {args.checkpoint}: {e}", file=sys.stderr, flush=True)
            return 2
        model = ckpt.model
        if model.w1.shape[0] != N_FEATURES:
            print(
                f"error: {args.checkpoint} expects {model.w1.shape[0]} features, "
                f"the dataset has {N_FEATURES}",
                file=sys.stderr,
                flush=True,
            )
            return 2
        label = f"checkpoint {args.checkpoint} (epoch {ckpt.epoch})"
        if point is not None:
            label = f"point {point.job_id}: {label}"
    else:
        model = fit_baseline(args.seed)
        label = f"baseline ({BASELINE_EPOCHS} epochs, lr={BASELINE_LR}, seed={args.seed})"

    if args.seconds:
        time.sleep(args.seconds)
    accuracy, loss = model.evaluate(test)

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        out / "evaluation_scores.json",
        {
            "model": "checkpoint" if args.checkpoint is not None else "baseline",
            "checkpoint": str(args.checkpoint) if args.checkpoint is not None else None,
            "split": "test",
            "accuracy": accuracy,
            "loss": loss,
            "n_examples": len(test),
            **(
                {
                    "sweep": point.sweep,
                    "point": point.job_id,
                    "params": point.params,
                    "point_score": point.score,
                }
                if point is not None
                else {}
            ),
        },
    )
    print(f"{label}: test accuracy={accuracy:.3f} loss={loss:.3f} n={len(test)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
