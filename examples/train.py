"""Example ugro job: train a tiny numpy MLP on a synthetic binary-classification problem.

Per epoch ``n`` (0-based) it writes ``<out>/epoch_<n>/{training_losses.pt, optimizer_buffer.json,
validation_scores.json}``, a checkpoint ``<checkpoint dir>/epoch_<n>.npz`` and one metrics record,
then prints ``epoch <n>/<epochs> ...``. See README.md in this directory.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from toy_model import (  # noqa: E402
    MLP,
    Checkpoint,
    SGDMomentum,
    atomic_write_json,
    atomic_writer,
    latest_checkpoint,
    load_checkpoint,
    make_dataset,
    save_checkpoint,
    train_epoch,
)

MetricsLogger = Callable[..., Any]

_ugro_log_metrics: MetricsLogger | None
try:
    from ugro import log_metrics as _imported_log_metrics  # type: ignore[attr-defined,import-not-found,unused-ignore]

    _ugro_log_metrics = _imported_log_metrics
except ImportError:
    _ugro_log_metrics = None


def make_fallback_log_metrics(out: Path) -> MetricsLogger:
    """Same record format as ``ugro.log_metrics``: one JSON object per line of metrics.jsonl."""
    path = out / "metrics.jsonl"

    def log_metrics(step: int | None = None, **values: Any) -> None:
        record = {"step": step, "time": time.time(), **values}
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")  # one write per line, appended

    return log_metrics


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--lr", type=float, default=0.1, help="learning rate (default 0.1)")
    p.add_argument("--epochs", type=int, default=5, help="total epochs, counting resumed ones")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="weight init and shuffling seed")
    p.add_argument(
        "--epoch-seconds", type=float, default=0.0, help="extra sleep per epoch, for demos"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default: $UGRO_JOB_DIR, else the current directory)",
    )
    p.add_argument(
        "--resume",
        type=Path,
        default=None,
        help="checkpoint .npz (or a directory of them) to resume from "
        "(default: $UGRO_RESUME_FROM if set)",
    )
    p.add_argument(
        "--crash-at-epoch",
        type=int,
        default=None,
        help="raise an error when this epoch starts, unless resumed (to try retries)",
    )
    args = p.parse_args(argv)
    if args.lr <= 0:
        p.error("--lr must be positive")
    if args.epochs < 1:
        p.error("--epochs must be at least 1")
    if args.batch_size < 1:
        p.error("--batch-size must be at least 1")
    if args.epoch_seconds < 0:
        p.error("--epoch-seconds must not be negative")
    if args.out is None:
        args.out = Path(os.environ.get("UGRO_JOB_DIR") or os.getcwd())
    if args.resume is None and os.environ.get("UGRO_RESUME_FROM"):
        args.resume = Path(os.environ["UGRO_RESUME_FROM"])
    return args


def write_epoch_dir(out: Path, epoch: int, files: dict[str, bytes]) -> None:
    """Create ``out/epoch_<epoch>/`` holding ``files`` (name -> content), each written atomically.

    On a fresh run the directory is filled under a hidden temporary name and renamed into
    place, so ``epoch_<n>/`` appears complete. If it already exists (a rerun into the same
    output directory) each file is replaced atomically in place.
    """
    final = out / f"epoch_{epoch}"
    if final.exists():
        for name, content in files.items():
            atomic_write_bytes(final / name, content)
        return
    staging = Path(tempfile.mkdtemp(dir=out, prefix=f".epoch_{epoch}.", suffix=".tmp"))
    try:
        for name, content in files.items():
            atomic_write_bytes(staging / name, content)
        staging.chmod(0o755)  # mkdtemp creates 0700
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def atomic_write_bytes(path: Path, content: bytes) -> None:
    with atomic_writer(path) as f:
        f.write(content)


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    ckpt_dir = Path(os.environ.get("UGRO_CHECKPOINT_DIR") or out / "checkpoints")
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    # Inside a ugro job, ugro records the metrics in the job's directory; run by hand,
    # they go to metrics.jsonl under --out.
    in_job = bool(os.environ.get("UGRO_JOB_DIR"))
    log_metrics = (_ugro_log_metrics if in_job else None) or make_fallback_log_metrics(out)

    data = make_dataset()
    train, val = data["train"], data["validation"]

    rng = np.random.default_rng(args.seed)
    model = MLP.init(rng)
    opt = SGDMomentum.for_model(model, lr=args.lr)
    start_epoch, global_step = 0, 0
    best_acc, best_epoch = -1.0, -1

    resume: Path | None = args.resume
    if resume is not None and resume.is_dir():
        found = latest_checkpoint(resume)
        if found is None:
            print(f"no checkpoint in {resume}; starting from scratch", flush=True)
        resume = found
    if resume is not None:
        try:
            ckpt = load_checkpoint(resume)
        except (OSError, KeyError, ValueError) as e:
            print(f"error: cannot resume from {resume}: {e}", file=sys.stderr, flush=True)
            return 2
        model = ckpt.model
        opt = SGDMomentum.for_model(model, lr=args.lr)  # lr comes from the command line
        opt.buffers.update(ckpt.momentum_buffers)
        if ckpt.rng_state:
            rng.bit_generator.state = ckpt.rng_state
        start_epoch, global_step = ckpt.epoch + 1, ckpt.global_step
        best_acc, best_epoch = ckpt.best_accuracy, ckpt.best_epoch
        print(f"resumed from {resume} at epoch {start_epoch}", flush=True)

    for epoch in range(start_epoch, args.epochs):
        if epoch == args.crash_at_epoch and start_epoch == 0:
            raise RuntimeError(f"simulated crash at epoch {epoch}")
        losses = train_epoch(model, opt, train, args.batch_size, rng)
        global_step += len(losses)
        if args.epoch_seconds:
            time.sleep(args.epoch_seconds)
        train_loss = float(np.mean(losses))
        val_acc, val_loss = model.evaluate(val)
        if val_acc > best_acc:
            best_acc, best_epoch = val_acc, epoch

        losses_file = io.BytesIO()  # a file object, so np.save does not append ".npy"
        np.save(losses_file, np.asarray(losses, dtype=np.float64))
        optimizer_state = {
            "epoch": epoch,
            "global_step": global_step,
            "lr": args.lr,
            "momentum": opt.momentum,
            "momentum_buffer_norm": opt.buffer_norm(),
        }
        scores = {"epoch": epoch, "accuracy": val_acc, "loss": val_loss}
        write_epoch_dir(
            out,
            epoch,
            {
                "training_losses.pt": losses_file.getvalue(),
                "optimizer_buffer.json": json_bytes(optimizer_state),
                "validation_scores.json": json_bytes(scores),
            },
        )
        save_checkpoint(
            ckpt_dir / f"epoch_{epoch}.npz",
            Checkpoint(
                model=model,
                momentum_buffers=opt.buffers,
                epoch=epoch,
                global_step=global_step,
                rng_state=dict(rng.bit_generator.state),
                best_accuracy=best_acc,
                best_epoch=best_epoch,
            ),
        )
        log_metrics(
            step=global_step,
            epoch=epoch,
            train_loss=train_loss,
            val_accuracy=val_acc,
            val_loss=val_loss,
        )
        print(
            f"epoch {epoch}/{args.epochs} loss={train_loss:.3f} val_acc={val_acc:.3f}",
            flush=True,
        )

    atomic_write_json(
        out / "final_scores.json",
        {"best_val_accuracy": best_acc, "best_epoch": best_epoch, "epochs": args.epochs},
    )
    print(f"best val_accuracy={best_acc:.3f} at epoch {best_epoch}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
