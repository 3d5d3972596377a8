"""Frame sources: spec parsing, folder pairing by name, videos, live newest-frame behaviour, credentials."""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from refusion.runtime.errors import DataError, SourceError
from refusion.runtime.sources import (
    CameraSource,
    GStreamerSource,
    ImageSequenceSource,
    Pairer,
    Source,
    StreamSource,
    VideoFileSource,
    mask_credentials,
    open_source,
    pair_by_name,
)


def write_frames(folder: Path, names: list[str], h: int = 24, w: int = 32, grey: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        img = np.full((h, w) if grey else (h, w, 3), (i * 17) % 256, np.uint8)
        cv2.imwrite(str(folder / name), img)


def drain(src: Source) -> list:
    frames = []
    with src:
        while (f := src.read()) is not None:
            frames.append(f)
    return frames


@pytest.mark.parametrize(
    "text, masked",
    [
        ("rtsp://admin:secret@10.0.0.2:554/stream1", "rtsp://***@10.0.0.2:554/stream1"),
        ("http://user@cam.local/mjpg", "http://***@cam.local/mjpg"),
        ("rtspsrc location=rtsp://u:p@h/x user-id=me user-pw=hunter2 ! appsink", None),
        ("cam0", "cam0"),
    ],
)
def test_mask_credentials(text: str, masked: str | None) -> None:
    out = mask_credentials(text)
    if masked is not None:
        assert out == masked
    for secret in ("secret", "hunter2", "u:p@", "admin"):
        assert secret not in out


def test_spec_parsing(tmp_path: Path) -> None:
    write_frames(tmp_path / "f", ["1.png", "2.png"])
    assert isinstance(open_source("cam0"), CameraSource) and open_source("3").index == 3
    assert isinstance(open_source("rtsp://u:pw@host/s"), StreamSource)
    assert "pw" not in open_source("rtsp://u:pw@host/s").label
    assert isinstance(open_source("videotestsrc ! videoconvert ! appsink"), GStreamerSource)
    assert isinstance(open_source(str(tmp_path / "f")), ImageSequenceSource)
    assert open_source(str(tmp_path / "f" / "*.png")).length == 2
    assert open_source(str(tmp_path / "f" / "1.png")).length == 1
    (tmp_path / "clip.avi").write_bytes(b"x")
    assert isinstance(open_source(str(tmp_path / "clip.avi")), VideoFileSource)
    with pytest.raises(SourceError, match="not found"):
        open_source(str(tmp_path / "missing"), "a")
    with pytest.raises(DataError, match="no image files match"):
        open_source(str(tmp_path / "f" / "*.jpg"), "a")


def test_folders_pair_by_name_in_natural_order(tmp_path: Path) -> None:
    write_frames(tmp_path / "a", ["f1.png", "f2.png", "f10.png", "only_a.png"])
    write_frames(tmp_path / "b", ["f10.png", "f2.png", "f1.png", "only_b.png"], grey=True)
    a, b = open_source(str(tmp_path / "a"), "a"), open_source(str(tmp_path / "b"), "b")
    warnings = pair_by_name(a, b)
    assert "1 image(s) only in source a and 1 only in source b" in warnings[0]
    fa, fb = drain(a), drain(b)
    assert [f.name for f in fa] == [f.name for f in fb] == ["f1", "f2", "f10"]
    assert fb[0].image.shape == (24, 32, 3)  # grey -> 3 equal channels
    write_frames(tmp_path / "c", ["x.png", "y.png"])
    with pytest.raises(DataError, match="no file names in common"):
        pair_by_name(open_source(str(tmp_path / "a")), open_source(str(tmp_path / "c")))


def test_corrupt_image_is_a_skippable_frame(tmp_path: Path) -> None:
    write_frames(tmp_path / "a", ["1.png", "3.png"])
    (tmp_path / "a" / "2.png").write_bytes(b"\x89PNG broken")
    frames = drain(open_source(str(tmp_path / "a"), "a"))
    assert [f.image is None for f in frames] == [False, True, False]
    assert "cannot decode" in frames[1].error


def test_video_file_every_frame(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 24))
    for i in range(12):
        writer.write(np.full((24, 32, 3), i * 20, np.uint8))
    writer.release()
    src = open_source(str(path), "a")
    frames = drain(src)
    assert len(frames) == 12 and src.fps == pytest.approx(10.0) and src.dropped == 0
    assert [f.index for f in frames] == list(range(12))


@pytest.mark.parametrize("content, message", [(b"", "empty"), (b"\x00garbage" * 100, "corrupt or unsupported")])
def test_bad_video_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(SourceError, match=message):
        open_source(str(path), "a").start()


def test_missing_camera() -> None:
    with pytest.raises(SourceError, match="camera 97 cannot be opened"):
        open_source("cam97", "a").start()


class Counter(Source):
    live = True

    def __init__(self, period: float) -> None:
        super().__init__("counter", "a")
        self.period = period
        self.n = 0

    def _open(self) -> None:
        pass

    def _grab(self):
        time.sleep(self.period)
        self.n += 1
        return np.full((4, 4, 3), self.n % 256, np.uint8)


def test_live_source_keeps_only_newest() -> None:
    with Counter(0.001) as src:
        first = src.read()
        time.sleep(0.05)
        newest = src.read(after=first.index)
        assert newest.index > first.index + 1  # frames in between were replaced, not queued
        assert src.dropped >= newest.index - first.index - 1
        assert src._queue.qsize() == 0


def test_live_pairing_respects_max_skew() -> None:
    a, b = Counter(0.002), Counter(0.003)
    b.role = "b"
    with a, b:
        pairer = Pairer(a, b, max_skew_s=0.02)
        for _ in range(5):
            fa, fb = pairer.next()
            assert abs(fa.t - fb.t) <= 0.02
