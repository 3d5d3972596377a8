"""Frame sources: cameras, video files, image folders/globs, network streams, GStreamer pipelines.

The reader-thread machinery they share (live sources keep the newest frame, file
sources a bounded queue; credentials masked in every label) is :class:`~.source_base.Source`.
:func:`open_source` turns a source string into one of the sources here or the demo of :mod:`.demo`.
"""
from __future__ import annotations

import glob as globmod
import re
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from .demo import demo_source
from .errors import DataError, MissingDependencyError, SourceError
from .imageio import IMAGE_SUFFIXES, list_images, natural_key, read_image
from .source_base import RECONNECT_DELAYS, STALL_TIMEOUT_S, Frame, Source, mask_credentials

__all__ = [
    "RECONNECT_DELAYS", "STALL_TIMEOUT_S", "Frame", "Source", "mask_credentials", "open_source",
    "ImageSequenceSource", "VideoFileSource", "CameraSource", "StreamSource", "GStreamerSource",
    "gstreamer_available", "pair_by_name", "pair_by_order", "is_live_spec", "Pairer",
]

_URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
_CAM_RE = re.compile(r"^(?:cam)?(\d+)$", re.IGNORECASE)


# -- concrete sources ---------------------------------------------------------
class ImageSequenceSource(Source):
    """Still images from a folder, a glob, or a single file; every frame delivered in order."""

    def __init__(self, files: Sequence[Path], label: str, role: str = "", fps: float | None = None,
                 listed: bool = False) -> None:
        super().__init__(label, role)
        self.files = list(files)
        self.length = len(self.files)
        self.fps = fps
        self.listed = listed  # from a folder or a glob (paired by file name), not one named file
        self._next = 0

    def restrict(self, names: Sequence[str]) -> None:
        """Keep only the files whose stem is in ``names``, in the order of ``names``."""
        by_stem = {f.stem: f for f in self.files}
        self.files = [by_stem[n] for n in names]
        self.length = len(self.files)

    def _open(self) -> None:
        if not self.files:
            raise DataError(f"{self._what()} has no images")

    def _grab(self) -> np.ndarray | None:
        if self._next >= len(self.files):
            return None
        path = self.files[self._next]
        self._next += 1
        return read_image(path)

    def _name(self, index: int) -> str:
        return self.files[index].stem if index < len(self.files) else super()._name(index)


class _CaptureSource(Source):
    """Common code of the sources read through ``cv2.VideoCapture``."""

    def __init__(self, label: str, role: str = "") -> None:
        super().__init__(label, role)
        self.cap = None

    def _make_capture(self):  # pragma: no cover - overridden
        raise NotImplementedError

    def _open_capture(self) -> bool:
        self.cap = self._make_capture()
        return bool(self.cap is not None and self.cap.isOpened())

    def _grab(self) -> np.ndarray | None:
        ok, img = self.cap.read()
        return img if ok and img is not None and img.size else None

    def _reopen(self) -> bool:
        self._release()
        return self._open_capture()

    def _release(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None

    def _read_props(self) -> None:
        import cv2

        fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0.5 < fps < 1000 else None


class VideoFileSource(_CaptureSource):
    """A video file; every frame delivered. A frame that cannot be decoded ends it with a warning."""

    def __init__(self, path: Path, role: str = "") -> None:
        super().__init__(str(path), role)
        self.path = Path(path)
        self._first: np.ndarray | None = None

    def _make_capture(self):
        import cv2

        return cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)

    def _open(self) -> None:
        import cv2

        if not self.path.is_file():
            raise SourceError(f"{self._what()}: video file not found")
        if self.path.stat().st_size == 0:
            raise SourceError(f"{self._what()}: video file is empty")
        if not self._open_capture():
            self._release()
            raise SourceError(f"{self._what()}: cannot open the video (corrupt or unsupported format)")
        ok, img = self.cap.read()
        if not ok or img is None:
            self._release()
            raise SourceError(f"{self._what()}: cannot decode any frame (corrupt or unsupported format)")
        self._first = img
        self._read_props()
        count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.length = count if count > 0 else None

    def _grab(self) -> np.ndarray | None:
        if self._first is not None:
            img, self._first = self._first, None
            return img
        img = super()._grab()
        if img is None and self.length and self.produced < self.length - 1:
            self.warn(
                f"{self._what()}: frame {self.produced} of {self.length} cannot be decoded; "
                "treating it as the end of the video"
            )
        return img


class CameraSource(_CaptureSource):
    """A local camera by index (``cam0`` or ``0``); live."""

    live = True

    def __init__(self, index: int, role: str = "") -> None:
        super().__init__(f"cam{index}", role)
        self.index = index

    def _make_capture(self):
        import cv2

        return cv2.VideoCapture(self.index)

    def _open(self) -> None:
        if not self._open_capture():
            self._release()
            raise SourceError(f"{self._what()}: camera {self.index} cannot be opened (not connected, busy, or no permission)")
        self._read_props()


class StreamSource(_CaptureSource):
    """A network stream (RTSP, HTTP, ...) through FFmpeg; live."""

    live = True

    def __init__(self, url: str, role: str = "") -> None:
        super().__init__(url, role)
        self._url = url  # unmasked, never logged

    def _make_capture(self):
        import cv2

        return cv2.VideoCapture(self._url, cv2.CAP_FFMPEG)

    def _open(self) -> None:
        if not self._open_capture():
            self._release()
            raise SourceError(f"{self._what()}: cannot open the stream (unreachable, wrong URL or credentials)")
        self._read_props()


class GStreamerSource(_CaptureSource):
    """A GStreamer pipeline string ending in ``appsink``; live."""

    live = True

    def __init__(self, pipeline: str, role: str = "") -> None:
        super().__init__(pipeline, role)
        self._pipeline = pipeline

    def _make_capture(self):
        import cv2

        return cv2.VideoCapture(self._pipeline, cv2.CAP_GSTREAMER)

    def _open(self) -> None:
        if not gstreamer_available():
            raise MissingDependencyError(
                f"{self._what()}: this OpenCV build has no GStreamer support; install an OpenCV built "
                "with GStreamer (e.g. the system python3-opencv), or give a camera, file or URL instead"
            )
        if not self._open_capture():
            self._release()
            raise SourceError(f"{self._what()}: GStreamer cannot start this pipeline (it must end in appsink)")
        self._read_props()


def gstreamer_available() -> bool:
    import cv2

    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line
    return False


# -- spec parsing ---------------------------------------------------------------
def open_source(spec: str, role: str = "") -> Source:
    """Build (not start) the source named by ``spec``.

    ``demo:ir`` / ``demo:vis`` (options ``?frames=60&size=320x240&seed=0``): the procedural
    demo sequence. ``camN`` or ``N``: camera N. ``scheme://...``: network stream (credentials masked).
    A string with `` ! ``: GStreamer pipeline. A glob (``*``, ``?``, ``[``): image files.
    A folder: its images, natural order. An image file: one still. Any other file: a video.
    """
    spec = str(spec).strip()
    if not spec:
        raise SourceError(f"source {role}: empty source")
    if spec.startswith("demo:"):
        return demo_source(spec, role)
    m = _CAM_RE.match(spec)
    if m:
        return CameraSource(int(m.group(1)), role)
    scheme = spec.split("://", 1)[0].lower() if "://" in spec else ""
    if scheme in _URL_SCHEMES:
        return StreamSource(spec, role)
    if scheme == "file":
        spec = spec.split("://", 1)[1]
    if " ! " in spec:
        return GStreamerSource(spec, role)
    path = Path(spec).expanduser()
    if path.is_dir():
        return ImageSequenceSource(list_images(path), str(path), role, listed=True)
    if path.is_file():
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return ImageSequenceSource([path], str(path), role)
        return VideoFileSource(path, role)
    if any(ch in spec for ch in "*?["):
        files = sorted(
            (Path(f) for f in globmod.glob(str(path)) if Path(f).suffix.lower() in IMAGE_SUFFIXES),
            key=natural_key,
        )
        if not files:
            raise DataError(f"source {role}: no image files match {mask_credentials(spec)}")
        return ImageSequenceSource(files, spec, role, listed=True)
    raise SourceError(
        f"source {role}: {mask_credentials(spec)} not found (expected a video file, image folder or glob, "
        "camN, an rtsp://, http:// URL, or a GStreamer pipeline)"
    )


def pair_by_name(a: ImageSequenceSource, b: ImageSequenceSource) -> list[str]:
    """Restrict two image sequences to the file stems they share (in a's order).

    Returns warnings about unpaired files; raises DataError when no names match.
    """
    names_b = {f.stem for f in b.files}
    common = [f.stem for f in a.files if f.stem in names_b]
    if not common:
        raise DataError(
            f"no file names in common between source a ({a.label}: {_names(a)}) and source b "
            f"({b.label}: {_names(b)}); image folders are paired by file name. Rename the files, or pass "
            "--pair-by order to pair them in sorted order"
        )
    warnings = []
    only_a, only_b = len(a.files) - len(common), len(b.files) - len(common)
    if only_a or only_b:
        warnings.append(f"{only_a} image(s) only in source a and {only_b} only in source b have no partner; skipped")
    a.restrict(common)
    b.restrict(common)
    return warnings


def _names(src: ImageSequenceSource, n: int = 3) -> str:
    names = [f.name for f in src.files[:n]]
    return ", ".join(names) + (f" ... ({len(src.files)} files)" if len(src.files) > n else "") if names else "no images"


def pair_by_order(a: ImageSequenceSource, b: ImageSequenceSource) -> list[str]:
    """Pair two image sequences in their sorted order, whatever the names; warns when the counts differ."""
    if a.length != b.length:
        n = min(a.length or 0, b.length or 0)
        longer = a if (a.length or 0) > n else b
        return [f"source {longer.role} ({longer.label}) has {longer.length} images, the other {n}: "
                f"the last {(longer.length or 0) - n} of source {longer.role} will not be used"]
    return []


def is_live_spec(spec: str) -> bool:
    """True for a source string naming a camera, a network stream or a GStreamer pipeline."""
    spec = str(spec).strip()
    if _CAM_RE.match(spec) or " ! " in spec:
        return True
    return "://" in spec and spec.split("://", 1)[0].lower() in _URL_SCHEMES


class Pairer:
    """Pairs frames of two started sources.

    Files: by order (index), the end of either ends the run. Live: newest frames,
    matched by capture time within ``max_skew_s``; the older one is replaced until
    they match (each replacement counts as skipped).
    """

    def __init__(self, a: Source, b: Source, max_skew_s: float = 0.05) -> None:
        self.a, self.b = a, b
        self.max_skew = max_skew_s
        self.skipped = 0
        self.pairs = 0  # pairs handed out
        self.end_note = ""  # set when one source ended while the other still had frames
        self._last = {id(a): -1, id(b): -1}

    def _read(self, src: Source, after: int | None = None) -> Frame | None:
        frame = src.read(self._last[id(src)] if after is None else after)
        if frame is not None:
            self._last[id(src)] = frame.index
        return frame

    def next(self) -> tuple[Frame, Frame] | None:
        pair = self._next()
        if pair is not None:
            self.pairs += 1
        return pair

    def _ended(self, fa: Frame | None, fb: Frame | None) -> None:
        """Say which source ran out first and how many frames of the other go unused."""
        if (fa is None) == (fb is None):
            return
        out, other = (self.a, self.b) if fa is None else (self.b, self.a)
        if other.live:
            left = f"source {other.role} ({other.label}) was still delivering"
        elif other.length is not None:
            unused = max(other.length - self.pairs, 1)  # the other source did return a frame
            left = f"{unused} frame(s) of source {other.role} ({other.label}) were not used"
        else:
            left = f"the rest of source {other.role} ({other.label}) was not used"
        self.end_note = f"source {out.role} ({out.label}) ran out after {self.pairs} frame(s); {left}"

    def _next(self) -> tuple[Frame, Frame] | None:
        fa, fb = self._read(self.a), self._read(self.b)
        if fa is None or fb is None:
            self._ended(fa, fb)
            return None
        if not (self.a.live and self.b.live):
            return fa, fb
        start = time.monotonic()
        while abs(fa.t - fb.t) > self.max_skew:
            self.skipped += 1
            if fa.t < fb.t:
                fa = self._read(self.a)
            else:
                fb = self._read(self.b)
            if fa is None or fb is None:
                return None
            if time.monotonic() - start > max(self.a.stall_timeout, 1.0):
                raise SourceError(
                    f"sources a and b never delivered frames within {self.max_skew * 1e3:g} ms of each other "
                    "(different frame rates or a stalled camera); raise --max-skew"
                )
        return fa, fb
