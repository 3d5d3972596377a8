"""F, P and R: sizes, shapes, and exact agreement with the authors' released checkpoints."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from refusion.runtime.imageio import read_image
from refusion.runtime.tasks import TASKS
from refusion.train.checkpoint import load_fusion_model
from refusion.train.networks import (
    FusionNet,
    LossProposalNet,
    ReconstructionNet,
    count_parameters,
    sobel_magnitude,
)
from refusion.runtime.colour import luma_bgr


def test_parameter_counts():
    f = FusionNet()
    assert count_parameters(f) == 59_856
    parts = {name: count_parameters(m) for name, m in f.named_children()}
    assert parts["embed_a"] == parts["embed_b"] == 144
    assert parts["encoder_a"] == parts["encoder_b"] == 7_280
    assert parts["afm"] == 15_472
    assert parts["decoder"] == 24_784
    assert parts["head1"] == 4_608 and parts["head2"] == 144
    assert 45_000 <= count_parameters(LossProposalNet()) <= 50_000
    assert 20_000 <= count_parameters(ReconstructionNet()) <= 40_000
    assert all(m.bias is None for m in f.modules() if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize("hw", [(16, 16), (33, 47)])
def test_shapes_and_ranges(hw):
    torch.manual_seed(0)
    x = torch.rand(2, 2, *hw)
    with torch.no_grad():
        y = FusionNet()(x)
    assert y.shape == (2, 1, *hw) and float(y.min()) >= 0 and float(y.max()) <= 1
    w, v = LossProposalNet()(x)
    assert w.shape == v.shape == (2, 2, *hw)
    torch.testing.assert_close(w.sum(1), torch.ones(2, *hw))
    torch.testing.assert_close(v.sum(1), torch.ones(2, *hw))
    r = ReconstructionNet()(y)
    assert r.shape == (2, 2, *hw)


def test_sobel_magnitude_known_values():
    x = torch.zeros(1, 1, 5, 5)
    x[..., 2:] = 1.0  # vertical step edge
    g = sobel_magnitude(x)
    # Interior columns next to the step see |Sx| = 4; flat interior is 0.
    assert g[0, 0, 2, 1] == 4 and g[0, 0, 2, 2] == 4
    assert g[0, 0, 2, 0] == 0  # flat region
    assert g[0, 0, 2, 4] == 4  # zero padding makes the right border an edge
    assert sobel_magnitude(torch.ones(1, 2, 6, 6))[0, :, 2:4, 2:4].abs().sum() == 0


@pytest.mark.parametrize("name", ["00710N", "00906N"])
def test_raw_output_matches_authors(official, name):
    model = load_fusion_model(official / "ReFusion_IVIF.pth", "ivif")
    ya = luma_bgr(read_image(official / "test_cases/IVIF/infrared" / f"{name}.png"))
    yb = luma_bgr(read_image(official / "test_cases/IVIF/visible" / f"{name}.png"))
    with torch.no_grad():
        out = model.net(torch.from_numpy(np.stack([ya, yb]))[None])[0, 0].numpy()
    ref = np.load(official / "outputs/IVIF/raw_npy" / f"{name}_raw_fused_Y.npy")
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= 1e-5


@pytest.mark.parametrize("task", TASKS)
def test_all_official_checkpoints_load(official, task):
    model = load_fusion_model(official / f"ReFusion_{task.upper()}.pth", task)
    assert model.kind == "official" and model.task == task
    assert count_parameters(model.net) == 59_856
