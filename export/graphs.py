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
import torch.nn.functional as F
from torch import Tensor, nn

from refusion.runtime import colour as C
from refusion.train.networks import FusionNet

#: Floor of the normalisation denominator (contract: max(hi' - lo', 1e-6)).
NORM_EPS = 1e-6


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


def _bgr_to_ycrcb(img: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """uint8 BGR (H, W, 3) -> float32 Y, Cr, Cb (H, W), OpenCV float formulas on BGR/255."""
    f = img.to(torch.float32) / 255.0
    b, g, r = f[..., 0], f[..., 1], f[..., 2]
    y = C.Y_R * r + C.Y_G * g + C.Y_B * b
    cr = (r - y) * C.CR_SCALE + C.TAU_FLOAT
    cb = (b - y) * C.CB_SCALE + C.TAU_FLOAT
    return y, cr, cb


def _fuse_chroma(c_a: Tensor, c_b: Tensor) -> Tensor:
    """Eq. 15, safe form (runtime/colour.py ``fuse_chroma`` with tau 0.5)."""
    da, db = c_a - C.TAU_FLOAT, c_b - C.TAU_FLOAT
    wa, wb = da.abs(), db.abs()
    return C.TAU_FLOAT + (da * wa + db * wb) / (wa + wb + C.CHROMA_EPS)


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
        ya, cra, cba = _bgr_to_ycrcb(a)
        yb, crb, cbb = _bgr_to_ycrcb(b)
        x = torch.stack([ya, yb], dim=0).unsqueeze(0)
        if self.half_:
            x = x.to(torch.float16)
        raw = self.net(x)[0, 0].to(torch.float32)  # float32 before the reductions over H*W
        lo, hi, alpha = norm_state[0], norm_state[1], norm_state[2]
        lo2 = alpha * lo + (1.0 - alpha) * raw.min()
        hi2 = alpha * hi + (1.0 - alpha) * raw.max()
        y = torch.clamp((raw - lo2) / torch.clamp(hi2 - lo2, min=NORM_EPS), 0.0, 1.0)
        cr = _fuse_chroma(cra, crb) - C.TAU_FLOAT
        cb = _fuse_chroma(cba, cbb) - C.TAU_FLOAT
        out_b = y + C.B_CB * cb
        out_g = y + C.G_CR * cr + C.G_CB * cb
        out_r = y + C.R_CR * cr
        bgr = torch.stack([out_b, out_g, out_r], dim=-1) * 255.0
        fused = torch.floor(torch.clamp(bgr, 0.0, 255.0) + 0.5).to(torch.uint8)
        return fused, torch.stack([lo2, hi2, alpha])
