"""Image reading: 8-bit grey/colour, 16-bit scaling, clear errors for bad files."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from refusion.runtime.errors import ImageReadError, RefusionError
from refusion.runtime.imageio import list_images, read_image, write_image


def test_grey_and_colour(tmp_path):
    g = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 3)
    cv2.imwrite(str(tmp_path / "g.png"), g)
    assert read_image(tmp_path / "g.png").shape == (8, 8, 3)
    np.testing.assert_array_equal(read_image(tmp_path / "g.png", colour=False), g)
    c = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    write_image(tmp_path / "c.png", c)
    np.testing.assert_array_equal(read_image(tmp_path / "c.png"), c)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_is_scaled(tmp_path, suffix):
    img = np.array([[0, 65535], [32768, 257]], dtype=np.uint16)
    cv2.imwrite(str(tmp_path / f"x{suffix}"), img)
    out = read_image(tmp_path / f"x{suffix}", colour=False)
    np.testing.assert_array_equal(out, [[0, 255], [128, 1]])


def test_errors(tmp_path):
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ImageReadError, match="cannot decode"):
        read_image(tmp_path / "text.png")
    ok, buf = cv2.imencode(".png", np.zeros((32, 32), np.uint8))
    (tmp_path / "cut.png").write_bytes(buf.tobytes()[:40])
    with pytest.raises(RefusionError):
        read_image(tmp_path / "cut.png")


def test_natural_order(tmp_path):
    for n in ("10", "2", "1"):
        cv2.imwrite(str(tmp_path / f"{n}.png"), np.zeros((2, 2), np.uint8))
    assert [p.stem for p in list_images(tmp_path)] == ["1", "2", "10"]


def test_natural_order_mixed_names(tmp_path):
    names = ["ICCV_03.png", "ICCV_1.png", "Arch.png", "7.png", "a10b.png", "a2b.png", "10x.jpg"]
    for n in names:
        cv2.imwrite(str(tmp_path / n), np.zeros((2, 2), np.uint8))
    got = [p.name for p in list_images(tmp_path)]
    assert got[:2] == ["7.png", "10x.jpg"]
    assert got.index("a2b.png") < got.index("a10b.png")
    assert got.index("ICCV_1.png") < got.index("ICCV_03.png")
