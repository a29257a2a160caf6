"""Shared code for the example trainer and evaluator: a synthetic dataset and a tiny numpy MLP.

Nothing here depends on ugro; ``train.py`` and ``evaluate.py`` import this module by putting
their own directory on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

N_FEATURES = 10
HIDDEN_UNITS = 32
MOMENTUM = 0.9
# The dataset never depends on --seed: the trainer and the evaluator must see the same splits.
DATA_SEED = 20240501
SPLIT_SIZES = {"train": 2000, "validation": 500, "test": 500}


# --------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class Split:
    x: FloatArray
    y: FloatArray  # 0.0 / 1.0 labels, shape (n,)

    def __len__(self) -> int:
        return int(self.y.shape[0])


def make_dataset(seed: int = DATA_SEED) -> dict[str, Split]:
    """Deterministic binary classification problem with a non-linear decision boundary.

    A linear model tops out near 75% accuracy; the MLP learns the interaction
    terms over a few epochs. About 3% of the labels are flipped, so 100% is not reachable.
    """
    rng = np.random.default_rng(seed)
    n_total = sum(SPLIT_SIZES.values())
    x = rng.normal(size=(n_total, N_FEATURES))
    w = rng.normal(size=N_FEATURES) / np.sqrt(N_FEATURES)
    score = (
        x @ w + 1.2 * x[:, 0] * x[:, 1] - 0.8 * np.abs(x[:, 2]) + 0.6 * np.sin(2.0 * x[:, 3]) + 0.5
    )
    y = (score > 0).astype(np.float64)
    flip = rng.random(n_total) < 0.03
    y[flip] = 1.0 - y[flip]

    splits: dict[str, Split] = {}
    start = 0
    for name, size in SPLIT_SIZES.items():
        splits[name] = Split(x=x[start : start + size], y=y[start : start + size])
        start += size
    return splits


# --------------------------------------------------------------------------- model


def _sigmoid(z: FloatArray) -> FloatArray:
    out: FloatArray = np.exp(-np.logaddexp(0.0, -z))
    return out


@dataclass
class MLP:
    """x -> tanh(x W1 + b1) -> w2 + b2 -> logit, trained with binary cross-entropy."""

    w1: FloatArray
    b1: FloatArray
    w2: FloatArray
    b2: FloatArray

    PARAM_NAMES = ("w1", "b1", "w2", "b2")

    @classmethod
    def init(cls, rng: np.random.Generator, n_features: int = N_FEATURES) -> MLP:
        return cls(
            w1=rng.normal(scale=1.0 / np.sqrt(n_features), size=(n_features, HIDDEN_UNITS)),
            b1=np.zeros(HIDDEN_UNITS),
            w2=rng.normal(scale=1.0 / np.sqrt(HIDDEN_UNITS), size=HIDDEN_UNITS),
            b2=np.zeros(()),
        )

    def params(self) -> dict[str, FloatArray]:
        return {name: getattr(self, name) for name in self.PARAM_NAMES}

    def logits(self, x: FloatArray) -> FloatArray:
        out: FloatArray = np.tanh(x @ self.w1 + self.b1) @ self.w2 + self.b2
        return out

    def loss_and_grads(self, x: FloatArray, y: FloatArray) -> tuple[float, dict[str, FloatArray]]:
        h = np.tanh(x @ self.w1 + self.b1)
        z = h @ self.w2 + self.b2
        loss = float(np.mean(np.logaddexp(0.0, z) - y * z))
        dz = (_sigmoid(z) - y) / x.shape[0]
        dh = np.outer(dz, self.w2) * (1.0 - h**2)
        grads = {
            "w1": x.T @ dh,
            "b1": dh.sum(axis=0),
            "w2": h.T @ dz,
            "b2": np.asarray(dz.sum()),
        }
        return loss, grads

    def evaluate(self, split: Split) -> tuple[float, float]:
        """Return (accuracy, mean binary cross-entropy) on ``split``."""
        z = self.logits(split.x)
        loss = float(np.mean(np.logaddexp(0.0, z) - split.y * z))
        accuracy = float(np.mean((z > 0) == (split.y > 0.5)))
        return accuracy, loss


@dataclass
class SGDMomentum:
    lr: float
    momentum: float
    buffers: dict[str, FloatArray]

    @classmethod
    def for_model(cls, model: MLP, lr: float, momentum: float = MOMENTUM) -> SGDMomentum:
        return cls(lr, momentum, {k: np.zeros_like(v) for k, v in model.params().items()})

    def step(self, model: MLP, grads: dict[str, FloatArray]) -> None:
        for name, param in model.params().items():
            buf = self.buffers[name]
            buf *= self.momentum
            buf += grads[name]
            param -= self.lr * buf  # in place: ``param`` is the model's own array

    def buffer_norm(self) -> float:
        return float(np.sqrt(sum(float(np.sum(b**2)) for b in self.buffers.values())))


def train_epoch(
    model: MLP, opt: SGDMomentum, split: Split, batch_size: int, rng: np.random.Generator
) -> list[float]:
    """One pass of mini-batch SGD over ``split`` in a shuffled order; returns per-batch losses."""
    order = rng.permutation(len(split))
    losses: list[float] = []
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        loss, grads = model.loss_and_grads(split.x[idx], split.y[idx])
        opt.step(model, grads)
        losses.append(loss)
    return losses


# --------------------------------------------------------------------------- checkpoints


@dataclass
class Checkpoint:
    model: MLP
    momentum_buffers: dict[str, FloatArray]
    epoch: int
    global_step: int
    rng_state: dict[str, Any]
    best_accuracy: float
    best_epoch: int


def save_checkpoint(path: Path, ckpt: Checkpoint) -> None:
    arrays: dict[str, Any] = {name: value for name, value in ckpt.model.params().items()}
    arrays.update({f"momentum_{k}": v for k, v in ckpt.momentum_buffers.items()})
    arrays["epoch"] = np.asarray(ckpt.epoch)
    arrays["global_step"] = np.asarray(ckpt.global_step)
    arrays["best_accuracy"] = np.asarray(ckpt.best_accuracy)
    arrays["best_epoch"] = np.asarray(ckpt.best_epoch)
    arrays["rng_state"] = np.asarray(json.dumps(ckpt.rng_state))
    with atomic_writer(path) as f:
        np.savez(f, **arrays)  # a file object, so numpy keeps the name as given


def load_checkpoint(path: Path) -> Checkpoint:
    with np.load(path, allow_pickle=False) as data:
        model = MLP(**{name: np.array(data[name], dtype=np.float64) for name in MLP.PARAM_NAMES})
        buffers = {
            name: np.array(data[f"momentum_{name}"], dtype=np.float64)
            for name in MLP.PARAM_NAMES
            if f"momentum_{name}" in data
        }
        return Checkpoint(
            model=model,
            momentum_buffers=buffers,
            epoch=int(data["epoch"]),
            global_step=int(data["global_step"]) if "global_step" in data else 0,
            rng_state=json.loads(str(data["rng_state"])) if "rng_state" in data else {},
            best_accuracy=float(data["best_accuracy"]) if "best_accuracy" in data else -1.0,
            best_epoch=int(data["best_epoch"]) if "best_epoch" in data else -1,
        )


# --------------------------------------------------------------------------- atomic files


@contextlib.contextmanager
def atomic_writer(path: Path) -> Iterator[IO[bytes]]:
    """Yield a binary file that replaces ``path`` in one step when the block exits cleanly.

    The data goes to a hidden temp file in the same directory, is fsynced, and is moved over
    ``path`` with ``os.replace``; readers never see a partial file. On error the temp file is
    removed and ``path`` is left untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    with atomic_writer(path) as f:
        f.write((json.dumps(obj, indent=2) + "\n").encode())


def latest_checkpoint(directory: Path) -> Path | None:
    """The highest-numbered ``epoch_<n>.npz`` in ``directory``, or None."""
    found: list[tuple[int, Path]] = []
    for path in directory.glob("epoch_*.npz"):
        m = re.fullmatch(r"epoch_(\d+)\.npz", path.name)
        if m:
            found.append((int(m.group(1)), path))
    return max(found)[1] if found else None
