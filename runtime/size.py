"""The one frame-size type: :class:`Size`, height then width, as every refusion command writes it (``HxW``).

Sizes travel through the code in this order only (``RunConfig.size``, ``--infer-size``,
engine profiles, ``Backend.size_limits``, the benchmarks). OpenCV takes ``(width, height)``:
that order exists only at the call into OpenCV, through :attr:`Size.cv`.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Size(NamedTuple):
    """A frame size in pixels: ``h`` rows, ``w`` columns (``Size(480, 640)`` is VGA, written 480x640)."""

    h: int
    w: int

    @classmethod
    def of(cls, image: np.ndarray) -> "Size":
        """The size of an (H, W) or (H, W, C) array."""
        return cls(int(image.shape[0]), int(image.shape[1]))

    @property
    def cv(self) -> tuple[int, int]:
        """(W, H): the ``dsize`` order of ``cv2.resize`` and ``cv2.warpPerspective``."""
        return self.w, self.h

    def __str__(self) -> str:
        return f"{self.h}x{self.w}"
