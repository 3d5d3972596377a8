"""Fusion metrics: known answers, invariances, agreement with scikit-image, bad input."""
from __future__ import annotations

import numpy as np
import pytest

from refusion.runtime import metrics as M
from refusion.runtime.errors import RefusionError, SizeError


def _scene(seed: int = 0, h: int = 48, w: int = 56) -> np.ndarray:
    """A smooth-plus-edges grey test image, float 0-255."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = 100 + 60 * np.sin(x / 5.0 + seed) * np.cos(y / 7.0) + 20 * rng.standard_normal((h, w))
    img[h // 3 : h // 2, w // 4 : w // 2] += 50  # a bright block with sharp edges
    return np.clip(img, 0, 255)


@pytest.fixture
def abf():
    a = np.round(_scene(1))
    b = np.round(_scene(2))
    f = np.round(0.6 * a + 0.4 * b)
    return a, b, f


# ----------------------------------------------------------------------------- known answers
def test_constant_image_scores_zero():
    c = np.full((20, 30), 77.0)
    assert M.entropy(c) == 0.0
    assert M.standard_deviation(c) == 0.0
    assert M.spatial_frequency(c) == 0.0
    assert M.average_gradient(c) == 0.0
    assert M.average_gradient(c, differences="forward") == 0.0


def test_entropy_two_levels_is_one_bit_and_uniform_is_eight():
    img = np.zeros((10, 10), np.uint8)
    img[:5] = 200
    assert M.entropy(img) == pytest.approx(1.0)
    uniform = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert M.entropy(uniform) == pytest.approx(8.0)


def test_small_hand_computed_values():
    img = np.array([[0.0, 2.0], [4.0, 6.0]])
    assert M.standard_deviation(img) == pytest.approx(np.sqrt(5.0))
    # row differences all 2, column differences all 4: SF = sqrt(4 + 16)
    assert M.spatial_frequency(img) == pytest.approx(np.sqrt(20.0))
    # np.gradient: gx = 2, gy = 4 everywhere -> sqrt((4 + 16) / 2)
    assert M.average_gradient(img) == pytest.approx(np.sqrt(10.0))


def test_ssim_of_identical_images_is_one(abf):
    a, b, _ = abf
    assert M.ssim_map_mean(a, a) == pytest.approx(1.0)
    assert M.ssim(a, a, a) == pytest.approx(1.0)
    assert M.ssim(a, a, a, combine="sum") == pytest.approx(2.0)


def test_qabf_perfect_fusion(abf):
    a, _, _ = abf
    assert M.qabf(a, a, a, equal="one") == pytest.approx(M.QABF_PEAK, abs=1e-12)
    assert M.qabf(a, a, a, equal="one", normalised=True) == pytest.approx(1.0, abs=1e-12)
    # The reference code's G = g_F quirk only matters on weak edges.
    assert M.qabf(a, a, a) == pytest.approx(M.QABF_PEAK, abs=0.01)
    assert 0.97 < M.QABF_PEAK < 0.98


def test_qabf_bounds_and_loss_of_edges(abf):
    a, b, f = abf
    q = M.qabf(a, b, f)
    assert 0.0 <= q <= M.QABF_PEAK
    flat = np.full_like(f, f.mean())  # keeps only the zero-padding border edges
    assert M.qabf(a, b, flat) < 0.5 * q


def test_scd_of_sum_fusion_is_two(abf):
    a, b, _ = abf
    assert M.scd(a, b, a + b) == pytest.approx(2.0)
    assert M.scd(a, b, a) == pytest.approx(M._corr2(a - b, a))


def test_vif_of_identical_images_is_one(abf):
    a, _, _ = abf
    big = np.tile(a, (2, 2))  # 4 scales need at least ~ 96 px
    assert M.vif_pixel(big, big) == pytest.approx(1.0, abs=1e-9)
    assert M.vif(big, big, big) == pytest.approx(2.0, abs=1e-9)
    assert M.vif(big, big, big, combine="mean") == pytest.approx(1.0, abs=1e-9)


def test_qcb_of_identical_images_is_one(abf):
    a, _, _ = abf
    assert M.qcb(a, a, a) == pytest.approx(1.0)


def test_qncie_range_and_identical(abf):
    a, b, f = abf
    q = M.qncie(a, b, f)
    lower = 1.0 - np.log(3.0) / np.log(256.0)
    assert lower - 1e-9 <= q <= 1.0
    # A = B = F: NCC = H(A) / 8 for every pair; eigenvalues 1 + 2r, 1 - r, 1 - r.
    r = M.entropy(a) / 8.0
    lam = np.array([1 + 2 * r, 1 - r, 1 - r]) / 3.0
    expected = 1.0 + float((lam * np.log2(lam)).sum()) / 8.0
    assert M.qncie(a, a, a) == pytest.approx(expected)


def test_mi_and_psnr_known_answers(abf):
    a, _, _ = abf
    h = M.entropy(a)
    assert M.mutual_information(a, a, a) == pytest.approx(2 * h)
    assert M.mutual_information(a, a, a, combine="mean") == pytest.approx(h)
    assert M.psnr(a, a, a) == float("inf")
    assert M.psnr(a, a, a + 1.0) == pytest.approx(10 * np.log10(255.0**2))


# ----------------------------------------------------------------------------- invariances
def test_entropy_invariant_to_pixel_permutation(abf):
    _, _, f = abf
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(f.ravel()).reshape(f.shape)
    assert M.entropy(shuffled) == pytest.approx(M.entropy(f))


def test_sd_sf_ag_invariant_to_adding_a_constant(abf):
    _, _, f = abf
    g = f + 13.0
    assert M.standard_deviation(g) == pytest.approx(M.standard_deviation(f))
    assert M.spatial_frequency(g) == pytest.approx(M.spatial_frequency(f))
    assert M.average_gradient(g) == pytest.approx(M.average_gradient(f))


@pytest.mark.parametrize("name", ["SCD", "SSIM", "MI", "PSNR", "VIF", "QABF", "QCB", "QNCIE"])
def test_two_source_metrics_are_symmetric(name):
    a = np.round(np.tile(_scene(3), (2, 2)))
    b = np.round(np.tile(_scene(4), (2, 2)))
    f = np.round(0.5 * a + 0.5 * b + 3)
    fn = M.METRICS[name][1]
    assert fn(a, b, f) == pytest.approx(fn(b, a, f), rel=1e-9, abs=1e-12)


def test_uint8_and_float_inputs_agree(abf):
    a, b, f = abf
    for name, (_, fn) in M.METRICS.items():
        if name == "VIF":
            continue  # needs larger images; covered elsewhere
        x = fn(a.astype(np.uint8), b.astype(np.uint8), f.astype(np.uint8))
        y = fn(a, b, f)
        assert x == pytest.approx(y), name


# ----------------------------------------------------------------------------- scikit-image
@pytest.mark.parametrize("data_range", [2.0, 255.0])
@pytest.mark.parametrize("gaussian", [False, True])
def test_ssim_matches_scikit_image(abf, data_range, gaussian):
    skm = pytest.importorskip("skimage.metrics")
    a, _, f = abf
    kw = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False} if gaussian else {}
    ref = skm.structural_similarity(a, f, data_range=data_range, **kw)
    assert M.ssim_map_mean(a, f, data_range=data_range, gaussian=gaussian) == pytest.approx(ref, abs=1e-10)


def test_fusion_ssim_mean_and_sum_conventions(abf):
    skm = pytest.importorskip("skimage.metrics")
    a, b, f = abf
    sa = skm.structural_similarity(a, f, data_range=2.0)
    sb = skm.structural_similarity(b, f, data_range=2.0)
    assert M.ssim(a, b, f) == pytest.approx((sa + sb) / 2, abs=1e-10)
    assert M.ssim(a, b, f, combine="sum") == pytest.approx(sa + sb, abs=1e-10)
    sa255 = skm.structural_similarity(a, f, data_range=255.0)
    sb255 = skm.structural_similarity(b, f, data_range=255.0)
    assert M.ssim(a, b, f, data_range=255) == pytest.approx((sa255 + sb255) / 2, abs=1e-10)


def test_per_source_ssim_names_the_source_f_departs_from(abf):
    """SSIM_A / SSIM_B are the two halves of SSIM, each against its own source (not swapped, not averaged)."""
    a, b, _ = abf
    f = np.round(0.9 * a + 0.1 * b)  # F follows A
    scores = M.compute_metrics(a, b, f, ["SSIM", "SSIMA", "SSIMB"])
    assert scores["SSIMA"] > scores["SSIMB"] + 0.2
    assert scores["SSIM"] == pytest.approx((scores["SSIMA"] + scores["SSIMB"]) / 2, abs=1e-12)
    assert M.canonical_metric("ssim_b") == "SSIMB"


def test_mutual_information_matches_scikit_image(abf):
    skm = pytest.importorskip("skimage.metrics")
    a, _, f = abf
    # scikit-image's NMI = (H(A) + H(F)) / H(A, F); ours MI = H(A) + H(F) - H(A, F).
    h_a, h_f = M.entropy(a), M.entropy(f)
    nmi = skm.normalized_mutual_information(a.astype(np.uint8), f.astype(np.uint8), bins=256)
    h_af = (h_a + h_f) / nmi
    assert M._mutual_information(a, f) == pytest.approx(h_a + h_f - h_af, rel=1e-6)


# ----------------------------------------------------------------------------- bad input
def test_different_sizes_raise_size_error(abf):
    a, b, f = abf
    with pytest.raises(SizeError, match="differ in size"):
        M.ssim(a, b, f[:-1])
    with pytest.raises(RefusionError):
        M.compute_metrics(a, b[:, :-2], f, ["SCD"])


def test_colour_input_raises_size_error(abf):
    a, b, f = abf
    colour = np.repeat(f[..., None], 3, axis=2)
    with pytest.raises(SizeError, match="grey"):
        M.qabf(a, b, colour)
    with pytest.raises(SizeError, match="grey"):
        M.entropy(colour)


def test_empty_and_tiny_inputs_raise():
    with pytest.raises(SizeError):
        M.entropy(np.zeros((0, 0)))
    with pytest.raises(SizeError):
        M.ssim(np.zeros((5, 5)), np.zeros((5, 5)), np.zeros((5, 5)))


def test_unknown_names_and_conventions():
    assert M.canonical_metric("Q_AB/F") == "QABF"
    assert M.canonical_metric("q_ncie") == "QNCIE"
    with pytest.raises(ValueError, match="unknown metric"):
        M.canonical_metric("FMI")
    with pytest.raises(ValueError, match="combine"):
        M.ssim(np.zeros((9, 9)), np.zeros((9, 9)), np.zeros((9, 9)), combine="max")


def test_default_metrics_cover_the_paper_tables():
    assert set(M.DEFAULT_METRICS["ivif"]) == {"EN", "SD", "SF", "AG", "SCD", "SSIM", "QABF"}
    assert set(M.DEFAULT_METRICS["meif"]) == {"EN", "SD", "SF", "VIF", "QCB", "QNCIE"}
