"""The two exported graphs as torch modules: core (Y planes -> raw fused Y) and colour (BGR -> BGR).

Both take a ``half`` switch. With ``half=True`` the wrapped network must be a
``.half()`` copy: the graph casts at its boundary (float32 <-> float16), the network
runs in float16, and the float32 islands are

- the q/k L2 normalisations (``l2_normalize_spatial`` computes them in float32 for
  half inputs: their sum of squares over H*W reaches ~6e5 at 640x480, above the
  float16 maximum 65504),
- in the colour graph all colour arithmetic, and the min/max over H*W of the
  output normalisation (the raw output is cast to float32 before them).

The colour graph repeats ``refusion.runtime.colour`` / ``refusion.train.fuse`` op for op.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from refusion.runtime.backends.torch_backend import colour_forward  # one home for the torch colour pipeline
from refusion.train.networks import FusionNet


def exportable(net: FusionNet, half: bool = False) -> FusionNet:
    """A deep copy of ``net`` ready for tracing: eval mode, frozen, optionally ``.half()``.

    The original network is not modified.
    """
    clone = copy.deepcopy(net).eval()
    if half:
        clone = clone.half()
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone


class CoreGraph(nn.Module):
    """``a``, ``b`` float32 (N, 1, H, W) in [0, 1] -> ``fused`` float32 (N, 1, H, W), F's sigmoid output."""

    def __init__(self, net: FusionNet, half: bool = False) -> None:
        super().__init__()
        self.net = net
        self.half_ = half

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        x = torch.cat([a, b], dim=1)
        if self.half_:
            x = x.to(torch.float16)
        return self.net(x).to(torch.float32)


class ColourGraph(nn.Module):
    """Two uint8 BGR frames -> fused uint8 BGR frame, all per-pixel work inside.

    Inputs: ``a``, ``b`` uint8 (H, W, 3) BGR; ``norm_state`` float32 (3,) = (lo, hi, alpha).
    Outputs: ``fused`` uint8 (H, W, 3) BGR; ``norm_state_out`` float32 (3,) = (lo', hi', alpha) with
    lo' = alpha*lo + (1-alpha)*min(raw), hi' likewise with max, and fused Y = clip((raw - lo') /
    max(hi' - lo', 1e-6), 0, 1). alpha 0 = per-frame min-max; (0, 1, 1) = no normalisation.
    """

    def __init__(self, net: FusionNet, half: bool = False) -> None:
        super().__init__()
        self.net = net
        self.half_ = half

    def forward(self, a: Tensor, b: Tensor, norm_state: Tensor) -> tuple[Tensor, Tensor]:
        # One home for the colour pipeline: rfrun's torch backend runs the same function eagerly.
        return colour_forward(self.net, a, b, norm_state, self.half_)
