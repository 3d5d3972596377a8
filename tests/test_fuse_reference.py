"""Our still-image pipeline reproduces the authors' Gray and RGB outputs for all 8 test cases."""
from __future__ import annotations

import numpy as np
import pytest

from refusion.runtime.imageio import read_image
from refusion.train.checkpoint import load_fusion_model
from refusion.train.fuse import fuse_pair

from .conftest import OFFICIAL_CASES

CASES = [(task, name) for task, (_, _, names) in OFFICIAL_CASES.items() for name in names]
_models: dict = {}


def _model(official, task):
    if task not in _models:
        _models[task] = load_fusion_model(official / f"ReFusion_{task}.pth", task.lower())
    return _models[task]


def _close(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.shape == ref.shape
    diff = np.abs(ours.astype(int) - ref.astype(int))
    assert diff.max() <= 2, f"max difference {diff.max()} grey levels"
    assert (diff <= 1).mean() >= 0.999


@pytest.mark.parametrize("task,name", CASES)
def test_matches_reference_pngs(official, task, name):
    folder_a, folder_b, _ = OFFICIAL_CASES[task]
    a = read_image(official / "test_cases" / task / folder_a / name)
    b = read_image(official / "test_cases" / task / folder_b / name)
    out = fuse_pair(_model(official, task).net, a, b)
    stem = name.rsplit(".", 1)[0]
    _close(out.grey, read_image(official / "outputs" / task / "Gray" / f"{stem}.png", colour=False))
    _close(out.bgr, read_image(official / "outputs" / task / "RGB" / f"{stem}.png"))
