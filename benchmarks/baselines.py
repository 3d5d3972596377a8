"""Classical fusion baselines, with the same signature as a fusion model.

Each baseline fuses two uint8 images of equal size, BGR (H, W, 3) or grey (H, W),
into a uint8 BGR (H, W, 3) image (:meth:`Baseline.fuse`), and also gives the fused
grey Y plane (H, W) uint8 that the metrics use (:meth:`Baseline.fuse_grey`).

Grey-domain baselines fuse the OpenCV Y channels (float, [0, 1]) and take the
chroma from paper Eq. 15 (refusion.runtime.colour), exactly like the ReFusion
pipeline; Mertens exposure fusion works on the colour images natively and its
grey result is the Y channel of its colour output.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from refusion.runtime import colour
from refusion.runtime.errors import SizeError


# ----------------------------------------------------------------------------- helpers
def to_uint8(x: np.ndarray) -> np.ndarray:
    """Float in [0, 255] -> uint8, clipped and rounded half up."""
    return np.floor(np.clip(x, 0.0, 255.0) + 0.5).astype(np.uint8)


def check_pair(img_a: np.ndarray, img_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate two uint8 images of equal size; return them as BGR (H, W, 3) uint8.

    Raises SizeError for different sizes or a non-image array.
    """
    out = []
    for name, img in (("a", img_a), ("b", img_b)):
        arr = np.asarray(img)
        if arr.dtype != np.uint8:
            raise SizeError(f"source {name} must be uint8, got {arr.dtype}")
        if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3, 4))) or arr.size == 0:
            raise SizeError(f"source {name} is not a grey or BGR image: shape {arr.shape}")
        out.append(colour.to_bgr(arr))
    if out[0].shape[:2] != out[1].shape[:2]:
        raise SizeError(
            f"sources differ in size: a is {out[0].shape[1]}x{out[0].shape[0]}, "
            f"b is {out[1].shape[1]}x{out[1].shape[0]} (W x H)"
        )
    return out[0], out[1]


def ycrcb01(bgr: np.ndarray) -> np.ndarray:
    """uint8 BGR (H, W, 3) -> float32 YCrCb (H, W, 3) in [0, 1] (chroma offset 0.5), as train/fuse.py."""
    return colour.bgr_to_ycrcb(bgr.astype(np.float32) / 255.0)


def compose_colour(y: np.ndarray, bgr_a: np.ndarray, bgr_b: np.ndarray) -> np.ndarray:
    """Fused Y (H, W) float in [0, 1] + the sources' chroma (Eq. 15) -> uint8 BGR (H, W, 3).

    Same arithmetic as refusion.train.fuse.fuse_pair (tau 0.5 on float chroma).
    """
    ya, yb = ycrcb01(bgr_a), ycrcb01(bgr_b)
    cr = colour.fuse_chroma(ya[..., 1], yb[..., 1], colour.TAU_FLOAT)
    cb = colour.fuse_chroma(ya[..., 2], yb[..., 2], colour.TAU_FLOAT)
    ycc = np.stack([y.astype(np.float32), cr, cb], axis=-1)
    return to_uint8(colour.ycrcb_to_bgr(ycc) * 255.0)


# ----------------------------------------------------------------------------- grey fusion rules
def average_y(y_a: np.ndarray, y_b: np.ndarray) -> np.ndarray:
    """Pixel average of two float Y planes (H, W) in [0, 1]."""
    return 0.5 * (y_a + y_b)


def laplacian_pyramid_y(y_a: np.ndarray, y_b: np.ndarray, levels: int = 4) -> np.ndarray:
    """Laplacian-pyramid fusion of two float Y planes in [0, 1] -> [0, 1] (H, W).

    Burt-Adelson pyramids (OpenCV pyrDown/pyrUp, 5x5 Gaussian); at each detail
    level the coefficient with the larger magnitude wins; the coarsest (base) level
    is averaged. ``levels`` detail levels, fewer when the image is small.
    """
    levels = max(0, min(levels, int(np.log2(max(2, min(y_a.shape)))) - 3))

    def pyramid(y: np.ndarray) -> list[np.ndarray]:
        g = [y.astype(np.float32)]
        for _ in range(levels):
            g.append(cv2.pyrDown(g[-1]))
        lap = []
        for i in range(levels):
            h, w = g[i].shape
            lap.append(g[i] - cv2.pyrUp(g[i + 1], dstsize=(w, h)))
        lap.append(g[-1])
        return lap

    pa, pb = pyramid(y_a), pyramid(y_b)
    fused = [np.where(np.abs(da) >= np.abs(db), da, db) for da, db in zip(pa[:-1], pb[:-1])]
    out = 0.5 * (pa[-1] + pb[-1])
    for detail in reversed(fused):
        h, w = detail.shape
        out = cv2.pyrUp(out, dstsize=(w, h)) + detail
    return np.clip(out, 0.0, 1.0)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al. guided filter (grey guide), box windows of (2r+1)^2, float32 (H, W)."""
    k = (2 * radius + 1, 2 * radius + 1)

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, cv2.CV_32F, k, normalize=True, borderType=cv2.BORDER_REFLECT)

    i, p = guide.astype(np.float32), src.astype(np.float32)
    mi, mp = box(i), box(p)
    var = box(i * i) - mi * mi
    cov = box(i * p) - mi * mp
    a = cov / (var + eps)
    b = mp - a * mi
    return box(a) * i + box(b)


def gff_y(
    y_a: np.ndarray,
    y_b: np.ndarray,
    r1: int = 45,
    eps1: float = 0.3,
    r2: int = 7,
    eps2: float = 1e-6,
    avg_size: int = 31,
    r_g: int = 5,
    sigma_g: float = 5.0,
) -> np.ndarray:
    """Guided-filter fusion (GFF; Li, Kang & Hu, IEEE TIP 2013) of two float Y planes in [0, 1].

    Two-scale decomposition (base = 31x31 mean, detail = rest); saliency =
    Gaussian-smoothed (11x11, sigma 5) |3x3 Laplacian|; binary max-saliency weight
    maps refined by guided filtering with the source as guide (base: r 45, eps 0.3;
    detail: r 7, eps 1e-6) and normalised to sum 1; fused = weighted bases +
    weighted details. Parameters are the paper's defaults.
    """
    ys = [y_a.astype(np.float32), y_b.astype(np.float32)]
    bases = [cv2.blur(y, (avg_size, avg_size), borderType=cv2.BORDER_REFLECT) for y in ys]
    details = [y - base for y, base in zip(ys, bases)]
    lap = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32)
    sal = [
        cv2.GaussianBlur(np.abs(cv2.filter2D(y, -1, lap, borderType=cv2.BORDER_REFLECT)), (2 * r_g + 1, 2 * r_g + 1), sigma_g)
        for y in ys
    ]
    pa = (sal[0] >= sal[1]).astype(np.float32)
    masks = [pa, 1.0 - pa]
    wb = [guided_filter(y, m, r1, eps1) for y, m in zip(ys, masks)]
    wd = [guided_filter(y, m, r2, eps2) for y, m in zip(ys, masks)]

    def normalise(w: list[np.ndarray]) -> list[np.ndarray]:
        w = [np.clip(x, 0.0, None) for x in w]
        s = w[0] + w[1]
        s = np.where(s < 1e-6, 1.0, s)
        return [x / s for x in w]

    wb, wd = normalise(wb), normalise(wd)
    out = wb[0] * bases[0] + wb[1] * bases[1] + wd[0] * details[0] + wd[1] * details[1]
    return np.clip(out, 0.0, 1.0)


# ----------------------------------------------------------------------------- baselines
@dataclass(frozen=True)
class Baseline:
    """A classical fusion method behind the fusion-model signature."""

    name: str
    description: str
    fuse_y: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None  # grey rule on Y in [0, 1]
    fuse_colour: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None  # native colour rule

    def fuse_both(self, img_a: np.ndarray, img_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Two uint8 images (grey or BGR, same size) -> (grey Y (H, W) uint8, BGR (H, W, 3) uint8)."""
        bgr_a, bgr_b = check_pair(img_a, img_b)
        if self.fuse_colour is not None:
            bgr = self.fuse_colour(bgr_a, bgr_b)
            grey = to_uint8(ycrcb01(bgr)[..., 0] * 255.0)
            return grey, bgr
        if self.fuse_y is None:
            raise ValueError(f"baseline {self.name!r} defines no fusion rule")
        y = self.fuse_y(ycrcb01(bgr_a)[..., 0], ycrcb01(bgr_b)[..., 0])
        return to_uint8(y * 255.0), compose_colour(y, bgr_a, bgr_b)

    def fuse(self, img_a: np.ndarray, img_b: np.ndarray) -> np.ndarray:
        """Two uint8 images (BGR (H, W, 3) or grey (H, W), same size) -> uint8 BGR (H, W, 3)."""
        return self.fuse_both(img_a, img_b)[1]

    def fuse_grey(self, img_a: np.ndarray, img_b: np.ndarray) -> np.ndarray:
        """Two uint8 images -> fused grey Y (H, W) uint8, what the metrics are computed on."""
        return self.fuse_both(img_a, img_b)[0]


def mertens_bgr(bgr_a: np.ndarray, bgr_b: np.ndarray) -> np.ndarray:
    """OpenCV Mertens exposure fusion (contrast, saturation, well-exposedness weights 1) -> uint8 BGR."""
    out = cv2.createMergeMertens().process([bgr_a, bgr_b])
    return to_uint8(out * 255.0)


BASELINES: dict[str, Baseline] = {
    "average": Baseline("average", "pixel average of the Y channels", fuse_y=average_y),
    "laplacian": Baseline(
        "laplacian", "Laplacian pyramid, max-abs details, averaged base (4 levels)", fuse_y=laplacian_pyramid_y
    ),
    "gff": Baseline("gff", "guided-filter fusion (Li et al. 2013)", fuse_y=gff_y),
    "mertens": Baseline("mertens", "OpenCV Mertens exposure fusion (colour)", fuse_colour=mertens_bgr),
}


def get_baseline(name: str) -> Baseline:
    """Look a baseline up by name (case-insensitive); ValueError lists the choices."""
    key = name.strip().lower()
    if key not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    return BASELINES[key]


def average(img_a: np.ndarray, img_b: np.ndarray) -> np.ndarray:
    """Average fusion: uint8 images -> uint8 BGR (H, W, 3)."""
    return BASELINES["average"].fuse(img_a, img_b)


def laplacian(img_a: np.ndarray, img_b: np.ndarray) -> np.ndarray:
    """Laplacian-pyramid fusion: uint8 images -> uint8 BGR (H, W, 3)."""
    return BASELINES["laplacian"].fuse(img_a, img_b)


def gff(img_a: np.ndarray, img_b: np.ndarray) -> np.ndarray:
    """Guided-filter fusion: uint8 images -> uint8 BGR (H, W, 3)."""
    return BASELINES["gff"].fuse(img_a, img_b)


def mertens(img_a: np.ndarray, img_b: np.ndarray) -> np.ndarray:
    """Mertens exposure fusion: uint8 images -> uint8 BGR (H, W, 3)."""
    return BASELINES["mertens"].fuse(img_a, img_b)
