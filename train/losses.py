"""The two losses of ReFusion (METHOD.md section 2).

Batches are (B, 2, H, W) float tensors in [0, 1]; means run over all B*H*W pixels.
The gradient operator is :func:`~refusion.train.networks.sobel_magnitude`
(|Sx * I| + |Sy * I|, zero padding 1).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .networks import sobel_magnitude


@dataclass(frozen=True)
class FusionLoss:
    total: Tensor
    intensity: Tensor
    gradient: Tensor


def fusion_loss(fused: Tensor, x: Tensor, w: Tensor, v: Tensor, alpha1: float = 1.0) -> FusionLoss:
    """L_f = L_int + alpha1 * L_grad, the learnable fusion loss, weights inside the square.

    L_int = mean((w_a (I_f - I_a))^2) + mean((w_b (I_f - I_b))^2), L_grad likewise with v and
    the Sobel magnitudes. fused (B, 1, H, W); x, w, v (B, 2, H, W).
    """
    d_int = w * (fused - x)  # broadcast fused over the two sources
    l_int = d_int[:, 0].pow(2).mean() + d_int[:, 1].pow(2).mean()
    d_grad = v * (sobel_magnitude(fused) - sobel_magnitude(x))
    l_grad = d_grad[:, 0].pow(2).mean() + d_grad[:, 1].pow(2).mean()
    return FusionLoss(l_int + alpha1 * l_grad, l_int, l_grad)


def reconstruction_loss(rec: Tensor, target: Tensor, alpha2: float = 1.0) -> Tensor:
    """L_r = mean(max_i |I_i - R_i|^2) + alpha2 * mean(max_i |grad I_i - grad R_i|^2), i in (a, b).

    The pixel-wise max over the two sources is the paper's choice (a sum is Ablation IV).
    rec, target (B, 2, H, W) in the fixed (a, b) order.
    """
    l_int = (rec - target).abs().amax(dim=1).pow(2).mean()
    l_grad = (sobel_magnitude(rec) - sobel_magnitude(target)).abs().amax(dim=1).pow(2).mean()
    return l_int + alpha2 * l_grad
