"""Classical fusion baselines: shapes, dtypes, known answers, colour handling, bad input."""
from __future__ import annotations

import numpy as np
import pytest

from refusion.benchmarks import baselines as B
from refusion.runtime import colour
from refusion.runtime.errors import RefusionError, SizeError


def _pair(h: int = 64, w: int = 80, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    grey = (120 + 80 * np.sin(x / 6.0) * np.cos(y / 9.0)).astype(np.uint8)
    bgr = np.clip(rng.normal(128, 40, (h, w, 3)), 0, 255).astype(np.uint8)
    return grey, bgr


@pytest.mark.parametrize("name", sorted(B.BASELINES))
def test_shapes_and_dtypes(name):
    grey, bgr = _pair()
    base = B.get_baseline(name)
    fused = base.fuse(grey, bgr)
    assert fused.shape == (64, 80, 3) and fused.dtype == np.uint8
    g = base.fuse_grey(grey, bgr)
    assert g.shape == (64, 80) and g.dtype == np.uint8
    assert getattr(B, name)(np.repeat(grey[..., None], 3, axis=2), bgr).shape == (64, 80, 3)


@pytest.mark.parametrize("name", ["average", "laplacian", "gff"])
def test_identical_sources_give_the_source(name):
    _, bgr = _pair()
    y = B.ycrcb01(bgr)[..., 0]
    fused_y = B.get_baseline(name).fuse_y(y, y)
    np.testing.assert_allclose(fused_y, y, atol=2e-3)


def test_average_is_the_mean_of_y():
    grey, bgr = _pair()
    ya = B.ycrcb01(colour.to_bgr(grey))[..., 0]
    yb = B.ycrcb01(bgr)[..., 0]
    g = B.BASELINES["average"].fuse_grey(grey, bgr).astype(float)
    np.testing.assert_allclose(g, (ya + yb) / 2 * 255, atol=0.51)


def test_laplacian_keeps_the_stronger_detail():
    h, w = 64, 64
    flat = np.full((h, w), 0.5, np.float32)
    edges = flat.copy()
    edges[:, w // 2 :] = 0.9
    fused = B.laplacian_pyramid_y(flat, edges)
    # max-abs details keep the full 0.4 jump at the edge; averaging would halve it
    jump = fused[:, w // 2].mean() - fused[:, w // 2 - 1].mean()
    assert jump > 0.35
    assert B.average_y(flat, edges)[0, w // 2] - B.average_y(flat, edges)[0, w // 2 - 1] == pytest.approx(0.2)


def test_gff_picks_the_sharp_source():
    rng = np.random.default_rng(1)
    sharp = rng.random((64, 64)).astype(np.float32)
    blurred = np.full_like(sharp, float(sharp.mean()))
    fused = B.gff_y(sharp, blurred)
    assert np.corrcoef(fused.ravel(), sharp.ravel())[0, 1] > 0.9


def test_grey_variant_is_y_of_colour_for_grey_rules():
    grey, bgr = _pair()
    g, c = B.BASELINES["gff"].fuse_both(grey, bgr)
    y_of_c = B.ycrcb01(c)[..., 0] * 255
    assert np.abs(y_of_c - g).mean() < 1.5  # only rounding and clipping of the colour image


def test_chroma_follows_eq15_grey_source_takes_colour_source_chroma():
    grey, bgr = _pair()
    fused = B.average(grey, bgr)
    cr_f = colour.bgr_to_ycrcb(fused)[..., 1].astype(float)
    cr_b = colour.bgr_to_ycrcb(bgr)[..., 1].astype(float)
    # Y changed, chroma is the colour source's (up to uint8 round trips)
    assert np.abs(cr_f - cr_b).mean() < 2.0


def test_mertens_is_native_colour():
    _, bgr = _pair()
    dark = (bgr * 0.3).astype(np.uint8)
    bright = np.clip(bgr.astype(int) * 2, 0, 255).astype(np.uint8)
    out = B.mertens(dark, bright)
    assert out.dtype == np.uint8 and out.shape == bgr.shape
    assert dark.mean() < out.mean() < bright.mean()


def test_different_sizes_are_a_clear_error():
    grey, bgr = _pair()
    with pytest.raises(SizeError, match="differ in size"):
        B.average(grey, bgr[:-1])


def test_non_uint8_and_non_image_inputs_are_errors():
    grey, bgr = _pair()
    with pytest.raises(RefusionError, match="uint8"):
        B.gff(grey.astype(np.float32), bgr)
    with pytest.raises(RefusionError, match="not a grey or BGR"):
        B.laplacian(np.zeros((4, 4, 2), np.uint8), bgr)


def test_unknown_baseline_lists_choices():
    with pytest.raises(ValueError, match="average"):
        B.get_baseline("wavelet")


def test_real_pair_runs(data_dir):
    from refusion.runtime.imageio import read_image

    a = read_image(data_dir / "ivif" / "MSRS" / "test" / "ir" / "00004N.png")
    b = read_image(data_dir / "ivif" / "MSRS" / "test" / "vis" / "00004N.png")
    for name in B.BASELINES:
        out = B.get_baseline(name).fuse(a, b)
        assert out.shape == b.shape
