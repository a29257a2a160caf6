"""GPU inventory backends and the public surface of the package."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import ugro
from ugro.errors import InventoryError
from ugro.gpus.base import foreign_use
from ugro.gpus.inventory import load_backend


def test_fake_gpus_are_simulated_and_can_be_told_another_program_uses_one(
    tmp_path: Path,
) -> None:
    backend = load_backend("fake:3", tmp_path)
    assert [d.index for d in backend.devices()] == [0, 1, 2]
    assert "3 simulated GPUs" in backend.describe()
    (tmp_path / "fake-gpus.json").write_text(json.dumps({"1": {"processes": [os.getpid()]}}))
    busy = backend.devices()[1]
    assert foreign_use(busy, leased=False, memory_threshold_mb=1024) is not None
    assert foreign_use(backend.devices()[0], leased=False, memory_threshold_mb=1024) is None


def test_memory_used_by_others_blocks_a_gpu_only_while_ugro_runs_nothing_there(
    tmp_path: Path,
) -> None:
    (tmp_path / "fake-gpus.json").write_text(json.dumps({"0": {"memory_used_mb": 5000}}))
    device = load_backend("fake:1", tmp_path).devices()[0]
    assert "5000 MiB in use" in (foreign_use(device, leased=False, memory_threshold_mb=1024) or "")
    assert foreign_use(device, leased=True, memory_threshold_mb=1024) is None


def test_without_a_gpu_there_is_one_cpu_slot_per_core_said_plainly() -> None:
    backend = load_backend("cpu")
    assert len(backend.devices()) == os.cpu_count()
    assert "no GPU found" in backend.describe() and "CPU slots" in backend.describe()
    # auto: NVML when a GPU answers, else the same CPU slots
    assert load_backend("auto").kind in ("nvml", "cpu")


@pytest.mark.parametrize("spec", ["fake:0", "fake:x", "tpu"])
def test_a_bad_backend_setting_says_what_to_write(spec: str) -> None:
    with pytest.raises(InventoryError, match="UGRO_GPU_BACKEND"):
        load_backend(spec)


def test_the_public_names_are_sorted_and_importable() -> None:
    assert ugro.__all__ == sorted(ugro.__all__)
    for name in ugro.__all__:
        assert getattr(ugro, name) is not None
