"""Colour conversion against OpenCV, round trips, and Eq. 15 chroma fusion."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from refusion.runtime import colour


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_uint8_matches_opencv(rng):
    img = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    np.testing.assert_array_equal(colour.bgr_to_ycrcb(img), cv2.cvtColor(img, cv2.COLOR_BGR2YCrCb))
    ycc = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    np.testing.assert_array_equal(colour.ycrcb_to_bgr(ycc), cv2.cvtColor(ycc, cv2.COLOR_YCrCb2BGR))


def test_float_matches_opencv(rng):
    img = rng.random((41, 29, 3), dtype=np.float32)
    np.testing.assert_allclose(colour.bgr_to_ycrcb(img), cv2.cvtColor(img, cv2.COLOR_BGR2YCrCb), atol=2e-6)
    ycc = colour.bgr_to_ycrcb(img)
    np.testing.assert_allclose(colour.ycrcb_to_bgr(ycc), cv2.cvtColor(ycc, cv2.COLOR_YCrCb2BGR), atol=2e-6)


def test_round_trips(rng):
    img = rng.random((20, 30, 3), dtype=np.float32)
    np.testing.assert_allclose(colour.ycrcb_to_bgr(colour.bgr_to_ycrcb(img)), img, atol=2e-3)
    u8 = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    back = colour.ycrcb_to_bgr(colour.bgr_to_ycrcb(u8)).astype(int)
    assert np.abs(back - u8).max() <= 3  # 8-bit YCrCb quantisation


def test_grey_source_gives_colour_sources_chroma(rng):
    col = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8).astype(np.float32) / 255
    grey = np.repeat(rng.random((16, 16, 1), dtype=np.float32), 3, axis=2)
    ya, yb = colour.bgr_to_ycrcb(grey), colour.bgr_to_ycrcb(col)
    for ch in (1, 2):
        fused = colour.fuse_chroma(ya[..., ch], yb[..., ch], colour.TAU_FLOAT)
        np.testing.assert_allclose(fused, yb[..., ch], atol=1e-4)
        fused_swapped = colour.fuse_chroma(yb[..., ch], ya[..., ch], colour.TAU_FLOAT)
        np.testing.assert_allclose(fused_swapped, yb[..., ch], atol=1e-4)


def test_two_grey_sources_give_grey():
    a = np.full((4, 4), 128.0, np.float32)
    np.testing.assert_array_equal(colour.fuse_chroma(a, a, colour.TAU_UINT8), a)
    assert np.isfinite(colour.fuse_chroma(a / 256, a / 256, colour.TAU_FLOAT)).all()


def test_eq15_weights_by_distance_from_neutral():
    # a is 10 above neutral, b 30 below: (138*10 + 98*30) / 40 = 108
    out = colour.fuse_chroma(np.array([138.0]), np.array([98.0]), colour.TAU_UINT8)
    np.testing.assert_allclose(out, [108.0], atol=1e-4)


def test_luma_and_to_bgr():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert colour.to_bgr(grey).shape == (3, 4, 3)
    np.testing.assert_allclose(colour.luma_bgr(grey), grey / 255.0, atol=1e-6)
    with pytest.raises(ValueError):
        colour.bgr_to_ycrcb(np.zeros((3, 4), np.float32))
