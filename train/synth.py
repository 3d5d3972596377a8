"""Synthetic training pairs from single images, for the tasks whose public training pairs are missing or few.

Multi-focus (``mfif``), from sharp images. Per pair (all random draws from
``numpy.random.default_rng([seed, 4, i])``):

1. Y plane of a sharp image, float32 in [0, 1].
2. Focus mask: uniform noise on a coarse grid (1/16 of the image side, at least 4x4),
   upscaled bicubically, blurred with a Gaussian (sigma = 1/16 of the shorter side),
   and thresholded at a random quantile in [0.3, 0.7], so the "near" region covers
   30-70% of the image in a few smooth blobs. The binary mask is then softened with a
   Gaussian of sigma 2 px, so that the focus boundary is not a hard step.
3. Defocus: Gaussian blur with sigma drawn uniformly in [1.5, 4] px.
4. near = m * sharp + (1 - m) * blurred; far = (1 - m) * sharp + m * blurred.

Multi-exposure (``meif``), from well-exposed images. Per pair (same random stream):

1. Y plane of a well-exposed image, float32 in [0, 1].
2. Linearise with a display gamma drawn uniformly in [1.8, 2.6]: lin = y ** gamma.
3. under: lin * 2 ** -s, s drawn uniformly in [1.5, 3] stops; Gaussian read noise with sigma
   drawn in [0, 0.004] (linear units); clipped to [0, 1].
4. over: lin * 2 ** s', s' drawn independently in [1.5, 3] stops, clipped at 1 (the blown
   highlights a longer exposure gives).
5. Both back through the same gamma and quantised to 8 bits, as a camera would store them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from refusion.runtime.errors import DataError
from refusion.runtime.imageio import list_images

from .data import PairSet, fit_to_crop, read_y

SIGMA_RANGE = (1.5, 4.0)
COVER_RANGE = (0.3, 0.7)
EDGE_SIGMA = 2.0
GAMMA_RANGE = (1.8, 2.6)
STOPS_RANGE = (1.5, 3.0)
READ_NOISE_MAX = 0.004


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


def make_bracket(y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(under, over) float32 (H, W) in [0, 1] from a well-exposed Y plane (H, W) in [0, 1]."""
    gamma = float(rng.uniform(*GAMMA_RANGE))
    lin = np.clip(y, 0.0, 1.0).astype(np.float64) ** gamma
    under = lin * 2.0 ** -float(rng.uniform(*STOPS_RANGE))
    under = under + rng.normal(0.0, float(rng.uniform(0.0, READ_NOISE_MAX)), y.shape)
    over = lin * 2.0 ** float(rng.uniform(*STOPS_RANGE))

    def stored(x: np.ndarray) -> np.ndarray:
        return (np.round(np.clip(x, 0.0, 1.0) ** (1.0 / gamma) * 255.0) / 255.0).astype(np.float32)

    return stored(under), stored(over)


#: The task's pair maker: source a and source b (in the task's role order) from one image.
MAKERS: dict[str, Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]] = {
    "mfif": make_pair,
    "meif": make_bracket,
}


def image_files(folder: str | Path) -> list[Path]:
    """The images in ``folder`` (DataError when it is missing or empty)."""
    d = Path(folder)
    if not d.is_dir():
        raise DataError(f"folder of images to synthesise pairs from not found: {d}")
    files = list_images(d)
    if not files:
        raise DataError(f"no images in {d}")
    return files


def synthesize_pairs(source: str | Path | list[Path], n: int = 0, seed: int = 0, min_side: int = 0,
                     task: str = "mfif") -> PairSet:
    """Pairs of ``task`` made from the images in ``source`` (a folder or a list of files). ``n`` = 0: one
    per image; more than the image count: images reused with new random draws."""
    if task not in MAKERS:
        raise DataError(f"no synthetic pairs for {task}: only {', '.join(MAKERS)}")
    files = list(source) if isinstance(source, list) else image_files(source)
    make = MAKERS[task]
    images = [read_y(f) for f in files]
    if min_side:
        images = [fit_to_crop(s, min_side) for s in images]
    names, a, b = [], [], []
    for i in range(n or len(files)):
        rng = np.random.default_rng([seed, 4, i])
        x, y = make(images[i % len(images)], rng)
        names.append(f"{files[i % len(files)].stem}_s{i}")
        a.append(x)
        b.append(y)
    return PairSet(names, a, b)
