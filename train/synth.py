"""Synthetic multi-focus pairs from sharp images (no public MFIF training pairs ship).

Recipe, per pair (all random draws from ``numpy.random.default_rng([seed, 4, i])``):

1. Y plane of a sharp image, float32 in [0, 1].
2. Focus mask: uniform noise on a coarse grid (1/16 of the image side, at least 4x4),
   upscaled bicubically, blurred with a Gaussian (sigma = 1/16 of the shorter side),
   and thresholded at a random quantile in [0.3, 0.7], so the "near" region covers
   30-70% of the image in a few smooth blobs. The binary mask is then softened with a
   Gaussian of sigma 2 px, so that the focus boundary is not a hard step.
3. Defocus: Gaussian blur with sigma drawn uniformly in [1.5, 4] px.
4. near = m * sharp + (1 - m) * blurred; far = (1 - m) * sharp + m * blurred.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from refusion.runtime.errors import DataError
from refusion.runtime.imageio import list_images

from .data import PairSet, fit_to_crop, read_y

SIGMA_RANGE = (1.5, 4.0)
COVER_RANGE = (0.3, 0.7)
EDGE_SIGMA = 2.0


def focus_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Soft mask float32 (h, w) in [0, 1]: 1 where the "near" image is in focus."""
    import cv2

    gh, gw = max(4, h // 16), max(4, w // 16)
    noise = rng.random((gh, gw)).astype(np.float32)
    field = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    field = cv2.GaussianBlur(field, (0, 0), max(1.0, min(h, w) / 16))
    q = float(rng.uniform(*COVER_RANGE))
    mask = (field > np.quantile(field, 1.0 - q)).astype(np.float32)
    return cv2.GaussianBlur(mask, (0, 0), EDGE_SIGMA)


def make_pair(sharp: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(near, far) float32 (H, W) from a sharp Y plane (H, W) in [0, 1]."""
    import cv2

    h, w = sharp.shape
    m = focus_mask(h, w, rng)
    blurred = cv2.GaussianBlur(sharp, (0, 0), float(rng.uniform(*SIGMA_RANGE)), borderType=cv2.BORDER_REFLECT_101)
    near = m * sharp + (1.0 - m) * blurred
    far = (1.0 - m) * sharp + m * blurred
    return near.astype(np.float32), far.astype(np.float32)


def synthesize_pairs(folder: str | Path, n: int = 0, seed: int = 0, min_side: int = 0) -> PairSet:
    """Near/far pairs from the sharp images in ``folder`` (``n`` = 0: one per image,
    more than the image count: images reused with new masks and blurs)."""
    d = Path(folder)
    if not d.is_dir():
        raise DataError(f"folder of sharp images not found: {d}")
    files = list_images(d)
    if not files:
        raise DataError(f"no images in {d}")
    sharp = [read_y(f) for f in files]
    if min_side:
        sharp = [fit_to_crop(s, min_side) for s in sharp]
    count = n or len(files)
    names, near, far = [], [], []
    for i in range(count):
        rng = np.random.default_rng([seed, 4, i])
        a, b = make_pair(sharp[i % len(sharp)], rng)
        names.append(f"{files[i % len(files)].stem}_s{i}")
        near.append(a)
        far.append(b)
    return PairSet(names, near, far)
