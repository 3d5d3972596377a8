"""Still-image fusion with F in torch, reproducing the authors' inference pipeline.

Pipeline (METHOD.md section 4): each source BGR uint8 -> float [0, 1] -> OpenCV
YCrCb; F fuses the two Y channels; the sigmoid output is min-max normalised per
image; chroma is fused by Eq. 15 (tau = 0.5 on float chroma); YCrCb -> BGR,
x255, clipped, rounded half up to uint8.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from refusion.runtime import colour
from refusion.runtime.colour import normalise_output

from .networks import FusionNet


@dataclass
class FusedImage:
    """The results of fusing one pair."""

    raw: np.ndarray  # (H, W) float32, F's sigmoid output in [0, 1]
    grey: np.ndarray  # (H, W) uint8, normalised fused Y
    bgr: np.ndarray  # (H, W, 3) uint8, fused colour image


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Float in [0, 255] -> uint8, clipped and rounded half up (as the reference PNGs)."""
    return np.floor(np.clip(x, 0.0, 255.0) + 0.5).astype(np.uint8)


@torch.no_grad()
def run_fusion(net: FusionNet, y_a: np.ndarray, y_b: np.ndarray, device: str | torch.device = "cpu") -> np.ndarray:
    """F on two (H, W) float32 Y planes in [0, 1] -> raw fused (H, W) float32."""
    if y_a.shape != y_b.shape:
        raise ValueError(f"sources differ in size: {y_a.shape} vs {y_b.shape}")
    x = torch.from_numpy(np.stack([y_a, y_b])[None].astype(np.float32)).to(device)
    dev_net = net.to(device)
    return dev_net(x)[0, 0].float().cpu().numpy()


def fuse_pair(
    net: FusionNet,
    bgr_a: np.ndarray,
    bgr_b: np.ndarray,
    normalisation: str = "minmax",
    device: str | torch.device = "cpu",
) -> FusedImage:
    """Fuse two uint8 images (BGR (H, W, 3) or grey (H, W)) of equal size."""
    fa = colour.to_bgr(bgr_a).astype(np.float32) / 255.0
    fb = colour.to_bgr(bgr_b).astype(np.float32) / 255.0
    if fa.shape != fb.shape:
        raise ValueError(f"sources differ in size: {fa.shape[:2]} vs {fb.shape[:2]}")
    ya, yb = colour.bgr_to_ycrcb(fa), colour.bgr_to_ycrcb(fb)
    raw = run_fusion(net, ya[..., 0], yb[..., 0], device)
    y = normalise_output(raw, normalisation)
    cr = colour.fuse_chroma(ya[..., 1], yb[..., 1], colour.TAU_FLOAT)
    cb = colour.fuse_chroma(ya[..., 2], yb[..., 2], colour.TAU_FLOAT)
    bgr = colour.ycrcb_to_bgr(np.stack([y, cr, cb], axis=-1).astype(np.float32))
    return FusedImage(raw=raw, grey=to_uint8(y * 255.0), bgr=to_uint8(bgr * 255.0))
