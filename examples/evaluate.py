"""Example ugro job: evaluate a train.py checkpoint (or a quick baseline) on the test split.

Writes ``<out>/evaluation_scores.json`` and prints a one-line summary. See README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from toy_model import (  # noqa: E402
    MLP,
    N_FEATURES,
    SGDMomentum,
    atomic_write_json,
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
    if args.out is None:
        args.out = Path(os.environ.get("UGRO_JOB_DIR") or os.getcwd())
    return args


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
        },
    )
    print(f"{label}: test accuracy={accuracy:.3f} loss={loss:.3f} n={len(test)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
