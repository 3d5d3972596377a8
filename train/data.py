"""Training data: paired source images held in memory as float32 Y planes, and a
stateless batch sampler.

Layout of a dataset root: ``<root>/<split>/<role>/<name>``; pairs share a file stem
in the two role folders (roles per task in :data:`refusion.train.config.TASK_ROLES`).
Y is the OpenCV-compatible BT.601 luma of the image read as BGR, as in the authors'
pipeline, in [0, 1].

Batches are a pure function of (seed, epoch, phase, batch index, rank): a resumed
run draws exactly the batches the interrupted one would have drawn, with no sampler
state to save.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refusion.runtime.colour import luma_bgr
from refusion.runtime.errors import DataError, SizeError
from refusion.runtime.imageio import read_image

PHASE_IDS = {"meta": 1, "fusion": 2, "val": 3, "synth": 4, "prior": 5}


@dataclass
class PairSet:
    """Paired Y planes: ``a[i]``, ``b[i]`` float32 (H_i, W_i) in [0, 1], same size per pair."""

    names: list[str]
    a: list[np.ndarray]
    b: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, idx: list[int]) -> "PairSet":
        return PairSet([self.names[i] for i in idx], [self.a[i] for i in idx], [self.b[i] for i in idx])

    def downscaled(self, max_side: int) -> "PairSet":
        """The same pairs, each image downscaled so its longer side is at most ``max_side`` (see downscale)."""
        return PairSet(self.names, [downscale(x, max_side) for x in self.a], [downscale(x, max_side) for x in self.b])


def read_y(path: Path) -> np.ndarray:
    """Y plane float32 (H, W) in [0, 1] of an image file (ImageReadError when unreadable)."""
    return luma_bgr(read_image(path, colour=True))


def load_pairs(pairs: list[tuple[str, Path, Path]], max_side: int = 0) -> PairSet:
    """Read every pair into memory; optionally downscale so the longer side <= ``max_side``."""
    names, a_list, b_list = [], [], []
    for name, pa, pb in pairs:
        a, b = read_y(pa), read_y(pb)
        if a.shape != b.shape:
            raise SizeError(
                f"pair {name!r} has different sizes: {pa} is {a.shape[1]}x{a.shape[0]}, "
                f"{pb} is {b.shape[1]}x{b.shape[0]}"
            )
        a, b = downscale(a, max_side), downscale(b, max_side)
        names.append(name)
        a_list.append(a)
        b_list.append(b)
    return PairSet(names, a_list, b_list)


def downscale(img: np.ndarray, max_side: int) -> np.ndarray:
    """``img`` resized (INTER_AREA) so its longer side is at most ``max_side``; unchanged when it already
    is, or when ``max_side`` is 0."""
    if not max_side or max(img.shape) <= max_side:
        return img
    import cv2

    s = max_side / max(img.shape)
    size = (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def fit_to_crop(img: np.ndarray, crop: int) -> np.ndarray:
    """Make both sides >= ``crop``: reflect-pad when an image is at least half the crop,
    upscale (bicubic, aspect kept) when it is smaller than that."""
    import cv2

    h, w = img.shape
    if min(h, w) >= crop:
        return img
    if min(h, w) * 2 < crop:
        s = crop / min(h, w)
        img = cv2.resize(img, (max(crop, round(w * s)), max(crop, round(h * s))), interpolation=cv2.INTER_CUBIC)
        return np.clip(img, 0.0, 1.0).astype(np.float32)
    ph, pw = max(0, crop - h), max(0, crop - w)
    return cv2.copyMakeBorder(img, ph // 2, ph - ph // 2, pw // 2, pw - pw // 2, cv2.BORDER_REFLECT_101)


class BatchSampler:
    """Random crops of random pairs, a pure function of the batch coordinates.

    Each batch holds ``pairs`` pairs and, with ``swap``, the same pairs with a and b
    exchanged: ``x`` (2P, 2, c, c) is what F and P see; ``target`` (2P, 2, c, c) keeps
    the fixed (a, b) order for R. Pairs are taken in the order of a per-epoch shuffle
    (consecutive mini-batches of a shuffled training set, Algorithm 1).
    """

    def __init__(self, pairs: PairSet, seed: int, pairs_per_batch: int, swap: bool, max_crop: int,
                 rank: int = 0, world: int = 1) -> None:
        if len(pairs) == 0:
            raise DataError("no training pairs")
        self.a = [fit_to_crop(x, max_crop) for x in pairs.a]
        self.b = [fit_to_crop(x, max_crop) for x in pairs.b]
        self.n = len(pairs)
        self.seed, self.pairs, self.swap = seed, pairs_per_batch, swap
        self.rank, self.world = rank, world
        self._perm_cache: dict[tuple[int, int, int], np.ndarray] = {}

    def _perm(self, epoch: int, phase: int, rnd: int) -> np.ndarray:
        key = (epoch, phase, rnd)
        if key not in self._perm_cache:
            if len(self._perm_cache) > 64:
                self._perm_cache.clear()
            self._perm_cache[key] = np.random.default_rng([self.seed, epoch, phase, rnd]).permutation(self.n)
        return self._perm_cache[key]

    def batch(self, epoch: int, phase: str, index: int, crop: int) -> tuple[np.ndarray, np.ndarray]:
        """(x, target) float32 arrays for batch ``index`` of ``phase`` in ``epoch`` on this rank."""
        ph = PHASE_IDS[phase]
        g = index * self.world + self.rank  # global batch number across ranks
        rng = np.random.default_rng([self.seed, epoch, ph, g, 7])
        crops = []
        for j in range(self.pairs):
            pos = g * self.pairs + j
            i = int(self._perm(epoch, ph, pos // self.n)[pos % self.n])
            a, b = self.a[i], self.b[i]
            h, w = a.shape
            y = int(rng.integers(0, h - crop + 1))
            x = int(rng.integers(0, w - crop + 1))
            crops.append(np.stack([a[y:y + crop, x:x + crop], b[y:y + crop, x:x + crop]]))
        ab = np.stack(crops).astype(np.float32)
        if not self.swap:
            return ab, ab
        return np.concatenate([ab, ab[:, ::-1]]), np.concatenate([ab, ab])
