"""Bring source b onto source a's pixel grid: resize, or warp with a 3x3 homography.

IR and visible cameras never share optics, so a fixed homography (from
``rfrun calibrate``) maps b's pixels onto a's. The homography JSON records the frame
sizes it was estimated at; at run time it is rescaled to the actual sizes.

Homography file (JSON)::

    {"format": "refusion-homography", "version": 1,
     "homography": [[h00, h01, h02], [h10, h11, h12], [h20, h21, h22]],   # b -> a pixels
     "size_a": [W, H], "size_b": [W, H], "points": n, "rms_px": e, "method": "..."}
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import DataError, SizeError
from .fsutil import atomic_write_text
from .size import Size

FORMAT_TAG = "refusion-homography"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Homography:
    """A 3x3 matrix mapping b's pixel coordinates (x, y, 1) to a's, with the sizes it was made for."""

    matrix: np.ndarray  # float64 (3, 3)
    size_a: Size | None = None  # frame size of a when estimated (the JSON stores it [W, H])
    size_b: Size | None = None  # frame size of b when estimated
    points: int = 0
    rms_px: float | None = None
    method: str = ""

    def __post_init__(self) -> None:
        for name in ("size_a", "size_b"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Size(*getattr(self, name)))

    def scaled(self, size_a: Size, size_b: Size) -> np.ndarray:
        """The float64 (3, 3) matrix for frames of sizes size_a, size_b."""
        m = self.matrix
        if self.size_a and self.size_a != size_a:
            sa = np.diag([size_a.w / self.size_a.w, size_a.h / self.size_a.h, 1.0])
            m = sa @ m
        if self.size_b and self.size_b != size_b:
            sb_inv = np.diag([self.size_b.w / size_b.w, self.size_b.h / size_b.h, 1.0])
            m = m @ sb_inv
        return m

    def to_json(self) -> str:
        d = {
            "format": FORMAT_TAG,
            "version": FORMAT_VERSION,
            "homography": [[float(v) for v in row] for row in self.matrix],
            "maps": "b->a",
            "size_a": list(self.size_a.cv) if self.size_a else None,  # [W, H]: the file format since version 1
            "size_b": list(self.size_b.cv) if self.size_b else None,
            "points": self.points,
            "rms_px": self.rms_px,
            "method": self.method,
        }
        return json.dumps(d, indent=2)


def load_homography(path: str | os.PathLike) -> Homography:
    """Read a homography JSON (ours, or any JSON with a 3x3 "homography"/"H" or a bare 3x3 list)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"homography file not found: {p}")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"homography file {p} is not valid JSON ({exc})") from None
    raw = d.get("homography", d.get("H")) if isinstance(d, dict) else d
    try:
        m = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        m = np.zeros(0)
    if m.shape != (3, 3) or not np.all(np.isfinite(m)) or abs(np.linalg.det(m)) < 1e-12:
        raise DataError(f"homography file {p} must hold an invertible 3x3 matrix under \"homography\"")

    def size(key: str) -> Size | None:  # stored [W, H]
        v = d.get(key) if isinstance(d, dict) else None
        return Size(int(v[1]), int(v[0])) if isinstance(v, (list, tuple)) and len(v) == 2 else None

    return Homography(m / m[2, 2] if m[2, 2] else m, size("size_a"), size("size_b"),
                      int(d.get("points", 0)) if isinstance(d, dict) else 0)


def save_homography(path: str | os.PathLike, h: Homography, overwrite: bool = False) -> Path:
    """Write the homography JSON atomically; refuses to overwrite unless asked."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise DataError(f"{p} exists; pass --overwrite to replace it")
    return atomic_write_text(p, h.to_json() + "\n")


@dataclass(frozen=True)
class AlignConfig:
    size: Size | None = None  # resize both sources to this; None = a's size
    homography: Path | None = None  # JSON warping b onto a
    no_resize: bool = False  # error instead of resizing b when the sizes differ

    def __post_init__(self) -> None:
        if self.size is not None:
            object.__setattr__(self, "size", Size(*self.size))


class Aligner:
    """Applies :class:`AlignConfig` to each pair; warns once through ``warn``."""

    def __init__(self, config: AlignConfig, warn: Callable[[str], None] | None = None) -> None:
        self.config = config
        if config.size is not None:
            check_frame_size(config.size.h, config.size.w, "--size")
        self.warn = warn or (lambda text: None)
        self.homography = load_homography(config.homography) if config.homography else None
        self._cache: dict[tuple, np.ndarray] = {}
        self._warned: set[tuple] = set()

    def __call__(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """a, b: uint8 (H, W, 3) -> the pair on a common grid, C-contiguous uint8 (H, W, 3)."""
        import cv2

        (ha, wa), (hb, wb) = a.shape[:2], b.shape[:2]
        if self.homography is not None:
            key = (wa, ha, wb, hb)
            m = self._cache.get(key)
            if m is None:
                m = self._cache[key] = self.homography.scaled(Size(ha, wa), Size(hb, wb))
            b = cv2.warpPerspective(b, m, (wa, ha), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        elif (ha, wa) != (hb, wb):
            if self.config.no_resize:
                raise SizeError(
                    f"sources differ in size: a is {ha}x{wa}, b is {hb}x{wb} (HxW); drop --no-resize to resize "
                    "b to a, or give --homography to warp b onto a"
                )
            key = ("resize", wa, ha, wb, hb)
            if key not in self._warned:
                self._warned.add(key)
                self.warn(f"sources differ in size (a {ha}x{wa}, b {hb}x{wb}, HxW); resizing b to {ha}x{wa}")
            b = _resize(b, Size(ha, wa))
        if self.config.size is not None and (ha, wa) != self.config.size:
            a, b = _resize(a, self.config.size), _resize(b, self.config.size)
        return np.ascontiguousarray(a), np.ascontiguousarray(b)


#: Largest frame the runtime accepts (H * W): 8192 x 8192, above 8K UHD (4320 x 7680).
MAX_PIXELS = 8192 * 8192


def check_frame_size(h: int, w: int, what: str = "frame size") -> None:
    """SizeError for a size (H, W) that is not positive or above :data:`MAX_PIXELS`."""
    if h < 1 or w < 1:
        raise SizeError(f"{what} {h}x{w} (HxW) must be at least 1x1")
    if h * w > MAX_PIXELS:
        raise SizeError(f"{what} {h}x{w} (HxW) is {h * w:,} pixels; at most {MAX_PIXELS:,} are supported "
                        "(e.g. 4320x7680, 8K)")


def _resize(img: np.ndarray, size: Size) -> np.ndarray:
    import cv2

    h, w = size
    shrink = w < img.shape[1] or h < img.shape[0]
    try:
        return cv2.resize(img, size.cv, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    except cv2.error as exc:  # e.g. out of memory for a huge size
        raise SizeError(f"cannot resize a {img.shape[0]}x{img.shape[1]} frame to {h}x{w} (HxW): "
                        f"{str(exc).strip().splitlines()[-1]}") from None


# -- calibration ------------------------------------------------------------------
def read_point_pairs(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Point pairs from JSON or CSV -> (points in a, points in b), float32 (N, 2) each.

    JSON: {"a": [[x, y], ...], "b": [[x, y], ...]} or [{"a": [x, y], "b": [x, y]}, ...].
    CSV: columns xa, ya, xb, yb (a header row is optional).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"point file not found: {p}")
    try:
        if p.suffix.lower() == ".csv":
            rows = [r for r in csv.reader(p.read_text(encoding="utf-8").splitlines()) if r and r[0].strip()]
            if rows and not _is_number(rows[0][0]):
                rows = rows[1:]
            arr = np.array([[float(v) for v in r[:4]] for r in rows], np.float32)
            if arr.ndim != 2 or arr.shape[1] != 4:
                raise ValueError("each row needs xa, ya, xb, yb")
            pa, pb = arr[:, :2], arr[:, 2:]
        else:
            d = json.loads(p.read_text(encoding="utf-8"))
            if isinstance(d, dict):
                pa, pb = np.array(d["a"], np.float32), np.array(d["b"], np.float32)
            else:
                pa = np.array([e["a"] for e in d], np.float32)
                pb = np.array([e["b"] for e in d], np.float32)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise DataError(f"cannot read point pairs from {p} ({exc})") from None
    if pa.shape != pb.shape or pa.ndim != 2 or pa.shape[1] != 2:
        raise DataError(f"{p}: a and b must list the same number of (x, y) points")
    return pa, pb


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def estimate_homography(
    points_a: np.ndarray,
    points_b: np.ndarray,
    size_a: Size | None = None,
    size_b: Size | None = None,
    method: str = "points",
) -> Homography:
    """Least squares (4 points) or RANSAC (5+) homography mapping points_b onto points_a.

    points_*: float (N, 2) pixel coordinates (x, y); N >= 4. size_a, size_b: the frame sizes the
    points were taken in, recorded so the matrix can be rescaled to other sizes.
    """
    import cv2

    pa, pb = np.asarray(points_a, np.float32), np.asarray(points_b, np.float32)
    n = len(pa)
    if n < 4:
        raise DataError(f"a homography needs at least 4 point pairs, got {n}")
    m, _mask = cv2.findHomography(pb, pa, cv2.RANSAC if n > 4 else 0, 3.0)
    if m is None or abs(np.linalg.det(m)) < 1e-12:
        raise DataError("the point pairs do not define a homography (collinear or repeated points?)")
    proj = cv2.perspectiveTransform(pb[None], m)[0]
    rms = float(np.sqrt(np.mean(np.sum((proj - pa) ** 2, axis=1))))
    return Homography(m / m[2, 2], size_a, size_b, n, round(rms, 4), method)


def find_checkerboard(img: np.ndarray, pattern: tuple[int, int], label: str) -> np.ndarray:
    """Inner corners (cols, rows) of a checkerboard in a uint8 image -> float32 (N, 2)."""
    import cv2

    grey = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE
    found, corners = cv2.findChessboardCorners(grey, pattern, flags=flags)
    if not found:
        # an IR image of a heated board has inverted contrast: try the negative too
        found, corners = cv2.findChessboardCorners(255 - grey, pattern, flags=flags)
    if not found:
        raise DataError(
            f"no checkerboard with {pattern[0]}x{pattern[1]} inner corners found in {label}; "
            "check --pattern (inner corners, columns x rows) or use point pairs"
        )
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 0.01)
    corners = cv2.cornerSubPix(grey, corners, (5, 5), (-1, -1), crit)
    return corners.reshape(-1, 2).astype(np.float32)


def calibrate_checkerboard(img_a: np.ndarray, img_b: np.ndarray, pattern: tuple[int, int]) -> Homography:
    """Homography b -> a from one checkerboard view seen by both cameras (uint8 images)."""
    pa = find_checkerboard(img_a, pattern, "image a")
    pb = find_checkerboard(img_b, pattern, "image b")
    size_a, size_b = Size.of(img_a), Size.of(img_b)
    method = f"checkerboard {pattern[0]}x{pattern[1]}"
    # the detector may start counting corners from the opposite end in one image
    fits = [estimate_homography(pa, q, size_a, size_b, method=method) for q in (pb, pb[::-1].copy())]
    return min(fits, key=lambda h: h.rms_px if h.rms_px is not None else np.inf)
