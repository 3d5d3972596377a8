"""Colour conversion and chroma fusion (ReFusion paper Eq. 15), numpy only.

Channel order is in every function name: OpenCV's YCrCb is (Y, Cr, Cb) and its
colour images are BGR. The float formulas are OpenCV's (ITU-R BT.601 luma,
chroma offset ``delta`` = 0.5 for float images in [0, 1] and 128 for 8-bit),
written out so that the ONNX colour graph can repeat them op for op.
"""
from __future__ import annotations

import numpy as np

# OpenCV's BGR <-> YCrCb coefficients (imgproc/src/color_yuv.simd.hpp).
Y_R, Y_G, Y_B = 0.299, 0.587, 0.114
CR_SCALE, CB_SCALE = 0.713, 0.564
R_CR, G_CR, G_CB, B_CB = 1.403, -0.714, -0.344, 1.773

#: Chroma neutral value ("tau" of Eq. 15) per dtype kind.
TAU_UINT8 = 128.0
TAU_FLOAT = 0.5

#: Added to the denominator of Eq. 15 so that two grey sources give grey, not 0/0.
CHROMA_EPS = 1e-6

#: How a still image's fused Y (F's sigmoid output) is mapped to [0, 1]: per-image min-max (the authors') or as is.
STILL_NORMALISATIONS = ("minmax", "none")


def bgr_to_ycrcb(img: np.ndarray) -> np.ndarray:
    """BGR (H, W, 3) -> YCrCb (H, W, 3), same dtype, equal to ``cv2.cvtColor``.

    uint8 input is converted by OpenCV itself (its fixed-point rounding is the
    reference); float input (range [0, 1], chroma offset 0.5) by the formula.
    """
    _check_hw3(img)
    if img.dtype == np.uint8:
        import cv2

        return cv2.cvtColor(img, cv2.COLOR_BGR2YCrCb)
    f = img.astype(np.float32, copy=False)
    b, g, r = f[..., 0], f[..., 1], f[..., 2]
    y = Y_R * r + Y_G * g + Y_B * b
    cr = (r - y) * CR_SCALE + TAU_FLOAT
    cb = (b - y) * CB_SCALE + TAU_FLOAT
    return np.stack([y, cr, cb], axis=-1).astype(img.dtype, copy=False)


def ycrcb_to_bgr(img: np.ndarray) -> np.ndarray:
    """YCrCb (H, W, 3) -> BGR (H, W, 3), same dtype, equal to ``cv2.cvtColor``.

    Float output is not clipped (as OpenCV); uint8 is saturated by OpenCV.
    """
    _check_hw3(img)
    if img.dtype == np.uint8:
        import cv2

        return cv2.cvtColor(img, cv2.COLOR_YCrCb2BGR)
    f = img.astype(np.float32, copy=False)
    y, cr, cb = f[..., 0], f[..., 1] - TAU_FLOAT, f[..., 2] - TAU_FLOAT
    b = y + B_CB * cb
    g = y + G_CR * cr + G_CB * cb
    r = y + R_CR * cr
    return np.stack([b, g, r], axis=-1).astype(img.dtype, copy=False)


def normalise_output(raw: np.ndarray, mode: str = "minmax") -> np.ndarray:
    """F's sigmoid output -> [0, 1]: per-image min-max (the authors') or unchanged."""
    if mode == "none":
        return raw
    if mode != "minmax":
        raise ValueError(f"unknown normalisation {mode!r}; choose from {STILL_NORMALISATIONS}")
    lo, hi = float(raw.min()), float(raw.max())
    return (raw - lo) / max(hi - lo, 1e-12)


def fuse_chroma(c_a: np.ndarray, c_b: np.ndarray, tau: float) -> np.ndarray:
    """Eq. 15 per pixel: weight each chroma by its distance from neutral ``tau``.

    ``C_f = tau + sum_i (C_i - tau)|C_i - tau| / (sum_i |C_i - tau| + eps)``, the
    safe form of ``(C_a|C_a-tau| + C_b|C_b-tau|) / (|C_a-tau| + |C_b-tau|)``. A grey
    source (C = tau) gets weight 0, so the colour source's chroma wins; two grey
    sources give tau. Works on any matching shapes; returns float32.
    """
    da = c_a.astype(np.float32) - tau
    db = c_b.astype(np.float32) - tau
    wa, wb = np.abs(da), np.abs(db)
    return tau + (da * wa + db * wb) / (wa + wb + CHROMA_EPS)


def to_bgr(img: np.ndarray) -> np.ndarray:
    """Grey (H, W) or (H, W, 1) or BGR (H, W, 3) -> BGR (H, W, 3), same dtype."""
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=2)
    if img.ndim == 3 and img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    if img.ndim == 3 and img.shape[2] == 4:
        return img[..., :3]
    _check_hw3(img)
    return img


def luma_bgr(img: np.ndarray) -> np.ndarray:
    """Y of a BGR or grey image as float32 in [0, 1] (H, W). 8-bit input is /255."""
    bgr = to_bgr(img)
    f = bgr.astype(np.float32) / 255.0 if bgr.dtype == np.uint8 else bgr.astype(np.float32)
    return bgr_to_ycrcb(f)[..., 0]


def _check_hw3(img: np.ndarray) -> None:
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {img.shape}")
