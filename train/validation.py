"""Validation at every epoch end: the 7 metrics of ``rfbench quality`` on held-out pairs, and a panel of w, v."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .config import VAL_METRICS
from .data import PairSet
from .networks import sobel_magnitude


def validation_metrics(a: np.ndarray, b: np.ndarray, raw: np.ndarray) -> dict[str, float]:
    """The 7 metrics of rfbench quality (same module, same conventions) of one validation pair:
    sources as Y in [0, 1], F's raw output min-max normalised and rounded to 8 bits as rfrun writes it."""
    from refusion.runtime.metrics import compute_metrics

    from refusion.runtime.colour import normalise_output

    from .fuse import to_uint8

    f = to_uint8(normalise_output(raw) * 255.0)
    a8, b8 = to_uint8(a * 255.0), to_uint8(b * 255.0)
    names = tuple(m.upper() for m in VAL_METRICS)
    return {k.lower(): v for k, v in compute_metrics(a8, b8, f, names).items()}


def selection_means(x: torch.Tensor, w: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """How far P selects one source per pixel: the mean w of whichever source is brighter at each pixel (w_max) and
    the mean v of whichever has the larger Sobel magnitude there (v_max). 0.5: no selection; 1: the per-pixel max.
    x, w, v (B, 2, H, W); the comparison is per pixel, so the channel order does not matter."""
    grad = sobel_magnitude(x)
    w_max = torch.where(x[:, 0] >= x[:, 1], w[:, 0], w[:, 1]).mean()
    v_max = torch.where(grad[:, 0] >= grad[:, 1], v[:, 0], v[:, 1]).mean()
    return w_max, v_max


@torch.no_grad()
def score_pairs(fusion: nn.Module, proposal: nn.Module, pairs: PairSet,
                to_device: Callable[[np.ndarray], torch.Tensor]) -> tuple[dict[str, float], tuple | None]:
    """Mean metrics, mean w_a, v_a and P's selection (:func:`selection_means`) over ``pairs``; and (fused, w_a, v_a)
    of the first pair, for its panel.
    F is put in eval mode and back in train mode."""
    fusion.eval()
    sums: dict[str, float] = {}
    first = None
    for i in range(len(pairs)):
        x = to_device(np.stack([pairs.a[i], pairs.b[i]])[None])
        fused = fusion(x)[0, 0].float().cpu().numpy()
        w, v = proposal(x)
        m = validation_metrics(pairs.a[i], pairs.b[i], fused)
        m["w_a"], m["v_a"] = float(w[0, 0].mean()), float(v[0, 0].mean())
        m["w_max"], m["v_max"] = (float(q) for q in selection_means(x, w, v))
        for k, val in m.items():
            sums[k] = sums.get(k, 0.0) + val
        if i == 0:
            first = (fused, w[0, 0].float().cpu().numpy(), v[0, 0].float().cpu().numpy())
    fusion.train()
    return {k: v / len(pairs) for k, v in sums.items()}, first


def write_panel(path: Path, pairs: PairSet, first: tuple, roles: tuple[str, str], title: str) -> None:
    """Sources | fused | w_a | v_a of the first validation pair, as a PNG."""
    from refusion.runtime.imageio import write_image

    from .panels import make_panel

    fused, w_a, v_a = first
    write_image(path, make_panel(pairs.a[0], pairs.b[0], fused, w_a, v_a, roles, title))
