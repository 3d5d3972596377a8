"""Reading and writing still images, with one clear error for anything unreadable."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import DataError, ImageReadError
from .fsutil import atomic_write_bytes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


def read_image(path: str | os.PathLike, colour: bool = True) -> np.ndarray:
    """Read an image file as uint8.

    Returns BGR (H, W, 3) when ``colour`` (grey files become 3 equal channels, as
    ``cv2.imread`` does), else grey (H, W). 16-bit PNG/TIFF are scaled to 8 bits
    (value * 255 / 65535, rounded); float TIFFs are taken as [0, 1].
    Raises ImageReadError for a missing, empty, corrupt or unsupported file.
    """
    import cv2

    p = Path(path)
    if not p.is_file():
        raise ImageReadError(f"image not found: {p}")
    if p.stat().st_size == 0:
        raise ImageReadError(f"image file is empty: {p}")
    data = np.fromfile(str(p), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ImageReadError(f"cannot decode image (corrupt or unsupported format): {p}")
    img = _to_uint8(img, p)
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    if colour:
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        return np.ascontiguousarray(img)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return img


def _to_uint8(img: np.ndarray, path: Path) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return np.floor(img.astype(np.float64) * (255.0 / 65535.0) + 0.5).astype(np.uint8)
    if img.dtype in (np.float32, np.float64):
        return np.clip(np.floor(img * 255.0 + 0.5), 0, 255).astype(np.uint8)
    raise ImageReadError(f"unsupported pixel type {img.dtype} in {path}")


def write_image(path: str | os.PathLike, img: np.ndarray) -> None:
    """Write a uint8 grey or BGR image atomically (temp file + rename)."""
    import cv2

    p = Path(path)
    ok, buf = cv2.imencode(p.suffix or ".png", img)
    if not ok:
        raise ImageReadError(f"cannot encode image as {p.suffix}: {p}")
    atomic_write_bytes(p, buf.tobytes())


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in ``folder``, sorted naturally (frame 2 before frame 10)."""
    d = Path(folder)
    files = [f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=natural_key)


def natural_key(path: Path) -> tuple:
    """Sort key that orders embedded numbers numerically ("2" before "10").

    Every part is a (kind, number, text) triple so that names mixing digits and
    letters at different positions still compare.
    """
    import re

    parts = [t for t in re.split(r"(\d+)", path.stem) if t]
    key = tuple((0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in parts)
    return (key, path.suffix.lower())  # "Candle" before "Candle2", whatever the suffix


def pair_folders(dir_a: str | os.PathLike, dir_b: str | os.PathLike) -> list[tuple[str, Path, Path]]:
    """(name, path_a, path_b) for every file stem present in both folders, in natural order.

    Raises DataError for a missing folder, a folder without images, two images with
    the same stem in one folder, or names found in only one folder (they are listed,
    each side prefixed by its folder's name, e.g. "only in ir/: 00012N").
    """
    found = []
    for d in (Path(dir_a), Path(dir_b)):
        if not d.is_dir():
            raise DataError(f"folder not found: {d}")
        files = list_images(d)
        if not files:
            raise DataError(f"no images in {d}")
        by_stem: dict[str, Path] = {}
        for f in files:
            if f.stem in by_stem:
                raise DataError(f"two images named {f.stem} in {d}: {by_stem[f.stem].name}, {f.name}")
            by_stem[f.stem] = f
        found.append((d, by_stem))
    (da, a), (db, b) = found
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if only_a or only_b:
        parts = [f"only in {d.name}/: {_few(names)}" for d, names in ((da, only_a), (db, only_b)) if names]
        raise DataError(
            f"unpaired images (pairs need the same file name in both folders): {'; '.join(parts)}"
        )
    return [(f.stem, f, b[f.stem]) for f in a.values()]


def _few(items: list[str], n: int = 10) -> str:
    return ", ".join(items[:n]) + (f" ... ({len(items)} in all)" if len(items) > n else "")
