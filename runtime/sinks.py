"""Where fused frames go: a window, a video file, an image folder, or one image file.

A video is written under a temporary name beside the target and renamed on close,
and closing happens in a ``finally``: a run stopped by Ctrl-C or an error leaves a
playable file with the frames written so far, never a half-written one. Existing
outputs are never replaced without ``overwrite``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import MissingDependencyError, OutputError
from .fsutil import check_writable, output_error
from .imageio import IMAGE_SUFFIXES, write_image
from .size import Size

#: Video containers we write, and the FourCC used for each.
VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
#: What the window / video shows.
VIEWS = ("fused", "side-by-side")


def output_kind(path: str | os.PathLike) -> str:
    """"video", "image" or "folder" for an ``--out`` path (decided by its suffix)."""
    suffix = Path(path).suffix.lower()
    if suffix in VIDEO_CODECS:
        return "video"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix:
        raise OutputError(
            f"cannot tell what to write for {path}: use a video ({', '.join(VIDEO_CODECS)}), "
            f"an image ({', '.join(IMAGE_SUFFIXES)}) or a folder name without a suffix"
        )
    return "folder"


class Sink:
    """write(frame, name) for each fused frame; close() exactly once at the end."""

    stop_requested = False  # set by a sink that lets the user stop the run (window: q / Esc)

    def write(self, frame: np.ndarray, name: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    @property
    def outputs(self) -> list[str]:
        return []


class VideoSink(Sink):
    """A video file, opened lazily at the first frame's size; finalised by rename on close."""

    def __init__(self, path: str | os.PathLike, fps: float = 25.0, overwrite: bool = False) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_CODECS:
            raise OutputError(f"unsupported video type {suffix!r} for {path}; use one of {', '.join(VIDEO_CODECS)}")
        if self.path.exists() and not overwrite:
            raise OutputError(f"{self.path} exists; pass --overwrite to replace it")
        if self.path.is_dir():
            raise OutputError(f"{self.path} is a folder, not a video file")
        check_writable(self.path, "video")
        self.codec = VIDEO_CODECS[suffix]
        self.fps = float(fps) if fps and fps > 0 else 25.0
        self.tmp = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self.frames = 0
        self.size: Size | None = None  # of the first frame; later frames are resized to it
        self._writer = None
        self._done = False

    def _open(self, frame: np.ndarray) -> None:
        import cv2

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise output_error(exc, self.path, "video") from None
        self.size = Size.of(frame)
        h, w = self.size
        writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*self.codec), self.fps, self.size.cv, True)
        if not writer.isOpened():
            writer.release()
            self.tmp.unlink(missing_ok=True)
            raise OutputError(f"cannot write video {self.path} (codec {self.codec}, {h}x{w} HxW) with this OpenCV build")
        self._writer = writer

    def write(self, frame: np.ndarray, name: str) -> None:
        if self._writer is None:
            self._open(frame)
        elif Size.of(frame) != self.size:
            import cv2

            frame = cv2.resize(frame, self.size.cv, interpolation=cv2.INTER_AREA)
        self._writer.write(frame)
        self.frames += 1

    def close(self) -> None:
        if self._done:
            return
        self._done = True
        writer, self._writer = self._writer, None
        try:
            if writer is not None:
                writer.release()
        finally:
            if self.frames and self.tmp.exists():
                try:
                    os.replace(self.tmp, self.path)
                except OSError as exc:
                    raise output_error(exc, self.path, "video") from None
            else:
                self.tmp.unlink(missing_ok=True)

    @property
    def outputs(self) -> list[str]:
        return [str(self.path)] if self._done and self.frames and self.path.exists() else []


class FolderSink(Sink):
    """One image per frame, named after source a's frame (``<name>.png``)."""

    def __init__(self, folder: str | os.PathLike, overwrite: bool = False, suffix: str = ".png") -> None:
        self.folder = Path(folder)
        if self.folder.is_file():
            raise OutputError(f"{self.folder} is a file; give a folder for image output")
        if self.folder.is_dir() and any(self.folder.iterdir()) and not overwrite:
            raise OutputError(f"{self.folder} exists and is not empty; pass --overwrite to write into it")
        check_writable(self.folder, "image folder", folder=True)
        self.suffix = suffix
        self.frames = 0

    def write(self, frame: np.ndarray, name: str) -> None:
        write_image(self.folder / f"{name}{self.suffix}", frame)
        self.frames += 1

    @property
    def outputs(self) -> list[str]:
        return [str(self.folder)] if self.frames else []


class ImageSink(Sink):
    """A single fused image (for a pair of stills)."""

    def __init__(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise OutputError(f"{self.path} exists; pass --overwrite to replace it")
        check_writable(self.path, "image")
        self.frames = 0

    def write(self, frame: np.ndarray, name: str) -> None:
        if self.frames:
            raise OutputError(
                f"--out {self.path} holds one image, but the sources deliver more frames; give a folder or a video"
            )
        write_image(self.path, frame)
        self.frames += 1

    @property
    def outputs(self) -> list[str]:
        return [str(self.path)] if self.frames else []


class WindowSink(Sink):
    """An OpenCV window; q or Esc stops the run."""

    def __init__(self, title: str = "rfrun") -> None:
        import cv2

        self.title = title
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error:
            raise MissingDependencyError(
                "--show needs OpenCV with GUI support, and this build has none (opencv-python-headless): "
                "pip install opencv-python, or write to a file with --out"
            ) from None

    def write(self, frame: np.ndarray, name: str) -> None:
        import cv2

        cv2.imshow(self.title, frame)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            self.stop_requested = True

    def close(self) -> None:
        import cv2

        try:
            cv2.destroyWindow(self.title)
        except cv2.error:
            pass


def compose(
    fused: np.ndarray,
    a: np.ndarray | None = None,
    b: np.ndarray | None = None,
    view: str = "fused",
    labels: tuple[str, str] = ("a", "b"),
    overlay: str = "",
) -> np.ndarray:
    """The frame shown/written: fused alone or ``a | b | fused``, with an optional text overlay.

    All images uint8 (H, W, 3) BGR of the same size; returns uint8 (H, W or 3W, 3).
    """
    if view == "side-by-side" and a is not None and b is not None:
        panels = [a.copy(), b.copy(), fused.copy()]
        for img, text in zip(panels, (labels[0], labels[1], "fused")):
            _text(img, text, (8, img.shape[0] - 10))
        out = np.concatenate(panels, axis=1)
    else:
        out = fused.copy() if overlay else fused
    if overlay:
        _text(out, overlay, (8, 22))
    return out


def _text(img: np.ndarray, text: str, org: tuple[int, int]) -> None:
    import cv2

    scale = max(0.4, min(img.shape[0], 720) / 720 * 0.8)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
