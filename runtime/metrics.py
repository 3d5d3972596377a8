"""Image-fusion quality metrics in numpy/scipy (no torch).

Every metric takes grey images as 2-D arrays (H, W) of the same size, uint8 or
float in the 0-255 range; ``a`` and ``b`` are the two sources and ``f`` the
fused image. The no-reference metrics (EN, SD, SF, AG) take only ``f``.
Definitions follow the literature and the common evaluation code used by
fusion papers (METHOD.md section 5); each docstring states its convention,
and the defaults are the ones that make ReFusion's published numbers comparable.

=========  ==========================================================  ============
name       what                                                         combination
=========  ==========================================================  ============
EN         Shannon entropy (bits) of the 256-bin grey histogram         -
SD         standard deviation (population, ddof 0)                      -
SF         spatial frequency sqrt(RF^2 + CF^2)                          -
AG         average gradient mean(sqrt((gx^2 + gy^2) / 2))               -
SCD        sum of correlations of differences                           sum (by def.)
SSIM       Wang et al. 2004, 7x7 uniform window, scikit-image style     mean (default)
SSIM_A/_B  SSIM(A, F) and SSIM(B, F) alone: which source F departs from  -
MI         mutual information MI(A,F) + MI(B,F), 256-bin, bits          sum (default)
PSNR       10 log10(255^2 / mean(MSE(A,F), MSE(B,F)))                   mean of MSEs
VIF        Sheikh-Bovik pixel-domain VIF, 4 scales, VIF(A,F)+VIF(B,F)   sum (default)
Q_AB/F     Xydeas-Petrovic edge preservation (Sobel)                    by definition
Q_CB       Chen-Blum (2009) with the DoG contrast-sensitivity filter    by definition
Q_NCIE     Wang et al. (2008) nonlinear correlation information entropy  by definition
=========  ==========================================================  ============
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from refusion.runtime._deps import require
from refusion.runtime.errors import SizeError

COMBINES = ("mean", "sum")

#: Q_AB/F model constants (Xydeas & Petrovic 2000), as in the common MATLAB code.
QABF_GAMMA_G, QABF_K_G, QABF_SIGMA_G = 0.9994, -15.0, 0.5
QABF_GAMMA_A, QABF_K_A, QABF_SIGMA_A = 0.9879, -22.0, 0.8
#: Highest Q_AB/F a pixel can score with these constants (G = 1, A = 1): ~0.9748.
#: With the literature's constants a perfect fusion scores this, not exactly 1.
QABF_PEAK = (QABF_GAMMA_G / (1.0 + math.exp(QABF_K_G * (1.0 - QABF_SIGMA_G)))) * (
    QABF_GAMMA_A / (1.0 + math.exp(QABF_K_A * (1.0 - QABF_SIGMA_A)))
)


# ----------------------------------------------------------------------------- input checks
def _grey(img: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        kind = "a colour" if arr.ndim == 3 and arr.shape[2] in (3, 4) else "an"
        raise SizeError(
            f"metrics take grey (H, W) images; {what} is {kind} array of shape {arr.shape} "
            "(convert colour images to their Y channel first)"
        )
    if arr.size == 0 or min(arr.shape) < 2:
        raise SizeError(f"{what} is too small for a metric: shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise SizeError(f"{what} has unsupported pixel type {arr.dtype}")
    return arr.astype(np.float64)


def _grey_set(**images: np.ndarray) -> list[np.ndarray]:
    out = [_grey(img, name) for name, img in images.items()]
    shapes = {name: o.shape for name, o in zip(images, out)}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{k} {v[0]}x{v[1]}" for k, v in shapes.items())
        raise SizeError(f"images differ in size (H x W): {listed}")
    return out


def _combine(x: float, y: float, combine: str) -> float:
    if combine == "mean":
        return 0.5 * (x + y)
    if combine == "sum":
        return x + y
    raise ValueError(f"unknown combine {combine!r}; choose from {COMBINES}")


def _quantise(img: np.ndarray) -> np.ndarray:
    """0-255 float -> integer grey levels 0..255 (rounded, clipped) as int64."""
    return np.clip(np.floor(img + 0.5), 0, 255).astype(np.int64)


def _minmax_255(img: np.ndarray) -> np.ndarray:
    """Stretch to 0..255 and round (``normalize1`` of the common MATLAB metric code)."""
    lo, hi = float(img.min()), float(img.max())
    if lo == 0.0 and hi == 0.0:
        return img
    if hi == lo:
        return np.zeros_like(img)
    return np.round((img - lo) / (hi - lo) * 255.0)


# ----------------------------------------------------------------------------- no-reference
def entropy(f: np.ndarray) -> float:
    """EN: Shannon entropy in bits of the 256-bin grey histogram of ``f``.

    ``f``: (H, W) in 0-255; float values are rounded to the nearest grey level
    (for integer images this equals ``np.histogram(f, 256, (0, 255))``).
    Range [0, 8]; 0 for a constant image.
    """
    g = _quantise(_grey(f, "F"))
    p = np.bincount(g.ravel(), minlength=256) / g.size
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def standard_deviation(f: np.ndarray) -> float:
    """SD: population standard deviation (ddof 0) of ``f`` (H, W), 0-255 units."""
    return float(np.std(_grey(f, "F")))


def spatial_frequency(f: np.ndarray) -> float:
    """SF = sqrt(RF^2 + CF^2), 0-255 units.

    RF^2 = mean of squared horizontal first differences f[i, j] - f[i, j-1], CF^2
    the same vertically; each mean is over its own (H x (W-1) or (H-1) x W)
    difference array (the convention of the common Python evaluators).
    """
    x = _grey(f, "F")
    rf2 = np.mean(np.diff(x, axis=1) ** 2)
    cf2 = np.mean(np.diff(x, axis=0) ** 2)
    return float(np.sqrt(rf2 + cf2))


def average_gradient(f: np.ndarray, differences: str = "central") -> float:
    """AG = mean over pixels of sqrt((gx^2 + gy^2) / 2), 0-255 units.

    ``differences="central"`` (default): gx, gy from ``np.gradient`` (central
    differences inside, one-sided at the borders), mean over all H x W pixels; the
    convention of the Python evaluators behind the IVIF numbers we compare with.
    ``"forward"``: forward differences over the (H-1) x (W-1) interior
    (the original definition of AG).
    """
    x = _grey(f, "F")
    if differences == "central":
        gy, gx = np.gradient(x)
    elif differences == "forward":
        gx = np.diff(x, axis=1)[:-1, :]
        gy = np.diff(x, axis=0)[:, :-1]
    else:
        raise ValueError(f"unknown differences {differences!r}; choose 'central' or 'forward'")
    return float(np.mean(np.sqrt((gx * gx + gy * gy) / 2.0)))


# ----------------------------------------------------------------------------- SCD, MI, PSNR
def _corr2(x: np.ndarray, y: np.ndarray) -> float:
    xm, ym = x - x.mean(), y - y.mean()
    den = math.sqrt(float((xm * xm).sum()) * float((ym * ym).sum()))
    return float((xm * ym).sum() / den) if den > 0 else 0.0


def scd(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """SCD (Aslantas & Bendes 2015) = corr(F - B, A) + corr(F - A, B).

    corr is the Pearson correlation of all pixels (MATLAB ``corr2``); a zero-variance
    operand contributes 0. Range [-2, 2]; symmetric in A and B. For F = A + B it is 2.
    """
    a, b, f = _grey_set(A=a, B=b, F=f)
    return _corr2(f - b, a) + _corr2(f - a, b)


def _joint_hist(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    qx, qy = _quantise(x).ravel(), _quantise(y).ravel()
    h = np.bincount(qx * 256 + qy, minlength=256 * 256).reshape(256, 256).astype(np.float64)
    return h / h.sum()


def _entropy_bits(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def _mutual_information(x: np.ndarray, y: np.ndarray) -> float:
    h = _joint_hist(x, y)
    return _entropy_bits(h.sum(axis=1)) + _entropy_bits(h.sum(axis=0)) - _entropy_bits(h.ravel())


def mutual_information(a: np.ndarray, b: np.ndarray, f: np.ndarray, combine: str = "sum") -> float:
    """MI = MI(A, F) + MI(B, F) in bits, from 256 x 256 joint histograms of grey levels.

    Inputs 0-255 (rounded to grey levels). ``combine="sum"`` (default, the fusion
    literature's MI) or ``"mean"``.
    """
    a, b, f = _grey_set(A=a, B=b, F=f)
    return _combine(_mutual_information(a, f), _mutual_information(b, f), combine)


def psnr(a: np.ndarray, b: np.ndarray, f: np.ndarray, peak: float = 255.0) -> float:
    """PSNR in dB = 10 log10(peak^2 / MSE), MSE = (MSE(A, F) + MSE(B, F)) / 2.

    Inputs 0-255 float or uint8; ``inf`` when F equals both sources.
    """
    a, b, f = _grey_set(A=a, B=b, F=f)
    mse = 0.5 * (np.mean((f - a) ** 2) + np.mean((f - b) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(peak * peak / mse))


# ----------------------------------------------------------------------------- SSIM
def ssim_local_moments(
    x: np.ndarray, y: np.ndarray, win_size: int = 7, gaussian: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Local means, variances and covariance of two grey images, as SSIM uses them: (ux, uy, vx, vy, vxy, pad).

    See :func:`ssim_map_mean` for the windows; ``pad`` is the border to crop from each map.
    """
    ndi = require("scipy.ndimage", "the SSIM metric")
    x, y = _grey_set(X=x, Y=y)
    if gaussian:
        sigma, truncate = 1.5, 3.5
        win = 2 * int(truncate * sigma + 0.5) + 1

        def filt(z: np.ndarray) -> np.ndarray:
            return ndi.gaussian_filter(z, sigma=sigma, truncate=truncate)

        cov_norm = 1.0
    else:
        win = int(win_size)
        if win < 3 or win % 2 == 0:
            raise ValueError(f"win_size must be odd and >= 3, got {win_size}")

        def filt(z: np.ndarray) -> np.ndarray:
            return ndi.uniform_filter(z, size=win)

        n = win * win
        cov_norm = n / (n - 1.0)
    if min(x.shape) < win:
        raise SizeError(f"images of {x.shape[0]}x{x.shape[1]} are smaller than the {win}x{win} SSIM window")
    ux, uy = filt(x), filt(y)
    uxx, uyy, uxy = filt(x * x), filt(y * y), filt(x * y)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    return ux, uy, vx, vy, vxy, (win - 1) // 2


def ssim_map_mean(
    x: np.ndarray,
    y: np.ndarray,
    data_range: float = 2.0,
    win_size: int = 7,
    gaussian: bool = False,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Mean SSIM (Wang et al. 2004) of two grey images, as scikit-image computes it.

    ``gaussian=False``: ``win_size`` x ``win_size`` uniform window and sample
    covariances (N/(N-1)); ``gaussian=True``: Gaussian window sigma 1.5 (truncate
    3.5, 11 x 11) and population covariances (``gaussian_weights=True`` in
    scikit-image). C1 = (k1 * data_range)^2, C2 = (k2 * data_range)^2. The map is
    averaged after cropping (window - 1) // 2 pixels at each border.
    ``data_range=2`` reproduces the old scikit-image default for float input
    (images given in 0-255 all the same), which is what the paper's IVIF values use.
    """
    ux, uy, vx, vy, vxy, pad = ssim_local_moments(x, y, win_size, gaussian)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return float(s[pad:-pad, pad:-pad].mean())


def ssim(
    a: np.ndarray,
    b: np.ndarray,
    f: np.ndarray,
    combine: str = "mean",
    data_range: float = 2.0,
    win_size: int = 7,
    gaussian: bool = False,
) -> float:
    """Fusion SSIM: SSIM(A, F) and SSIM(B, F) combined by ``combine``.

    Defaults (mean, 7x7 uniform window, data_range 2 on 0-255 images) match the
    paper's IVIF numbers (METHOD.md section 6); ``combine="sum"`` and
    ``data_range=255`` give the other conventions in use. See :func:`ssim_map_mean`.
    """
    a, b, f = _grey_set(A=a, B=b, F=f)
    sa = ssim_map_mean(a, f, data_range, win_size, gaussian)
    sb = ssim_map_mean(b, f, data_range, win_size, gaussian)
    return _combine(sa, sb, combine)


def ssim_to_source(src: np.ndarray, f: np.ndarray, data_range: float = 2.0, win_size: int = 7) -> float:
    """SSIM(src, F) alone, with :func:`ssim`'s defaults: the half of the fusion SSIM that one source gives.

    Reported as SSIM_A and SSIM_B, it shows which source a fused image departs from when the mean is low.
    """
    src, f = _grey_set(source=src, F=f)
    return ssim_map_mean(src, f, data_range, win_size, False)


# ----------------------------------------------------------------------------- VIF
def _gauss_window(n: int, sigma: float) -> np.ndarray:
    r = (n - 1) / 2.0
    ax = np.arange(n) - r
    xx, yy = np.meshgrid(ax, ax)
    w = np.exp(-(xx * xx + yy * yy) / (2.0 * sigma * sigma))
    return w / w.sum()


def vif_pixel(ref: np.ndarray, dist: np.ndarray, sigma_nsq: float = 2.0) -> float:
    """Pixel-domain VIF (Sheikh & Bovik 2006, ``vifp_mscale``) of ``dist`` against ``ref``.

    Four scales; at scale s (1..4) a Gaussian window of N = 2^(5-s) + 1 pixels with
    sigma N/5; from scale 2 on the images are low-passed ('valid') and decimated by
    2. HVS noise variance ``sigma_nsq`` = 2 (0-255 images). Equals 1 for ref == dist.
    """
    signal = require("scipy.signal", "the VIF metric")
    ref, dist = _grey_set(R=ref, D=dist)
    eps = 1e-10
    num = den = 0.0
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        win = _gauss_window(n, n / 5.0)

        def valid(z: np.ndarray, w: np.ndarray = win) -> np.ndarray:
            return signal.fftconvolve(z, w[::-1, ::-1], mode="valid")

        if scale > 1:
            ref = valid(ref)[::2, ::2]
            dist = valid(dist)[::2, ::2]
        if min(ref.shape) < n:
            raise SizeError(f"image too small for 4-scale VIF: {ref.shape} at scale {scale}")
        mu1, mu2 = valid(ref), valid(dist)
        s1 = np.maximum(valid(ref * ref) - mu1 * mu1, 0.0)
        s2 = np.maximum(valid(dist * dist) - mu2 * mu2, 0.0)
        s12 = valid(ref * dist) - mu1 * mu2
        g = s12 / (s1 + eps)
        sv = s2 - g * s12
        low1 = s1 < eps
        g[low1] = 0.0
        sv[low1] = s2[low1]
        s1[low1] = 0.0
        low2 = s2 < eps
        g[low2] = 0.0
        sv[low2] = 0.0
        neg = g < 0
        sv[neg] = s2[neg]
        g[neg] = 0.0
        sv[sv <= eps] = eps
        num += float(np.sum(np.log10(1.0 + g * g * s1 / (sv + sigma_nsq))))
        den += float(np.sum(np.log10(1.0 + s1 / sigma_nsq)))
    return num / den if den > 0 else 1.0


def vif(a: np.ndarray, b: np.ndarray, f: np.ndarray, combine: str = "sum", reference: str = "source") -> float:
    """Fusion VIF = VIF(A, F) + VIF(B, F) (``combine="sum"``, default) or their mean.

    Pixel-domain 4-scale VIF (:func:`vif_pixel`), inputs 0-255. ``reference="source"``
    (default): each source is the reference and F the distorted image, as in the
    common fusion evaluators (whose convention is the sum); ``"fused"`` swaps the
    roles. Note: this is Sheikh-Bovik VIF, not VIFF (Han et al. 2013).
    """
    a, b, f = _grey_set(A=a, B=b, F=f)
    if reference == "source":
        return _combine(vif_pixel(a, f), vif_pixel(b, f), combine)
    if reference == "fused":
        return _combine(vif_pixel(f, a), vif_pixel(f, b), combine)
    raise ValueError(f"unknown reference {reference!r}; choose 'source' or 'fused'")


# ----------------------------------------------------------------------------- Q_AB/F
def _sobel(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel responses with zero padding ('same' size): (horizontal gx, vertical gy)."""
    p = np.pad(x, 1)
    # gx: right column minus left column, weights 1 2 1 down the rows.
    gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
    # gy: top row minus bottom row, weights 1 2 1 along the columns.
    gy = (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:]) - (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:])
    return gx, gy


def _edge(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gx, gy = _sobel(x)
    g = np.sqrt(gx * gx + gy * gy)
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.where(gx == 0, np.pi / 2, np.arctan(gy / np.where(gx == 0, 1.0, gx)))
    return g, alpha


def _edge_preservation(gs: np.ndarray, als: np.ndarray, gf: np.ndarray, alf: np.ndarray, equal: str) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(gs > gf, gf / np.where(gs == 0, 1.0, gs), gs / np.where(gf == 0, 1.0, gf))
    eq = gs == gf
    if equal == "reference":
        ratio = np.where(eq, gf, ratio)
    elif equal == "one":
        ratio = np.where(eq, 1.0, ratio)
    else:
        raise ValueError(f"unknown equal {equal!r}; choose 'reference' or 'one'")
    orient = 1.0 - np.abs(als - alf) / (np.pi / 2)
    qg = QABF_GAMMA_G / (1.0 + np.exp(QABF_K_G * (ratio - QABF_SIGMA_G)))
    qa = QABF_GAMMA_A / (1.0 + np.exp(QABF_K_A * (orient - QABF_SIGMA_A)))
    return qg * qa


def qabf(a: np.ndarray, b: np.ndarray, f: np.ndarray, equal: str = "reference", normalised: bool = False) -> float:
    """Q_AB/F (Xydeas & Petrovic 2000): gradient-weighted edge-information preservation.

    Sobel edge strength g and orientation alpha = atan(gy / gx) (pi/2 where gx = 0)
    of each 0-255 image, zero padding; relative strength G = min(g_s, g_f) / max(...),
    relative orientation A = 1 - |alpha_s - alpha_f| / (pi/2); sigmoids with
    Gamma_g 0.9994, k_g -15, s_g 0.5, Gamma_a 0.9879, k_a -22, s_a 0.8; weights
    g_A^L and g_B^L with L = 1. Range [0, QABF_PEAK ~ 0.9748].

    ``equal="reference"`` (default) keeps the widely used MATLAB/Python code's
    behaviour where g_s == g_f sets G = g_f (not 1), so results match published
    tables; ``"one"`` uses G = 1 there (the paper's definition). ``normalised``
    divides by :data:`QABF_PEAK` so that a perfect fusion (A = B = F with
    ``equal="one"``) scores exactly 1. Symmetric in A and B.
    """
    a, b, f = _grey_set(A=a, B=b, F=f)
    ga, ala = _edge(a)
    gb, alb = _edge(b)
    gf, alf = _edge(f)
    qaf = _edge_preservation(ga, ala, gf, alf, equal)
    qbf = _edge_preservation(gb, alb, gf, alf, equal)
    den = float((ga + gb).sum())
    if den == 0:
        return 0.0
    q = float((qaf * ga + qbf * gb).sum() / den)
    return q / QABF_PEAK if normalised else q


# ----------------------------------------------------------------------------- Q_CB
def _freqspace(n: int) -> np.ndarray:
    """MATLAB ``freqspace`` 1-D grid for n points: ((0..n-1) - floor(n/2)) * 2 / n."""
    return (np.arange(n) - n // 2) * (2.0 / n)


def qcb(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """Q_CB (Chen & Blum 2009), human-perception fusion metric, as in the standard code.

    Each image is min-max stretched to 0..255 and rounded; filtered in the frequency
    domain by the DoG contrast-sensitivity function
    S(r) = exp(-(r/15.3870)^2) - 0.7622 exp(-(r/1.3456)^2), with r in cycles per
    degree from the grid freqspace * (size / 30); local contrast
    C = |(G_2 * I) / (G_4 * I) - 1| with unnormalised 31x31 Gaussians sigma 2 and 4
    (zero padding); masked contrast C' = C^3 / (C^2 + 1e-4); preservation
    Q_XF = min(C'_X, C'_F) / max(C'_X, C'_F); saliency weights C'_X^2 /
    (C'_A^2 + C'_B^2); result: mean of the weighted map. Range [0, 1].
    """
    signal = require("scipy.signal", "the Q_CB metric")
    a, b, f = _grey_set(A=a, B=b, F=f)
    rows, cols = a.shape
    u, v = np.meshgrid(_freqspace(cols) * (cols / 30.0), _freqspace(rows) * (rows / 30.0))
    r = np.sqrt(u * u + v * v)
    csf = np.exp(-((r / 15.3870) ** 2)) - 0.7622 * np.exp(-((r / 1.3456) ** 2))

    k = np.arange(-15, 16)
    xx, yy = np.meshgrid(k, k)

    def gauss(sigma: float) -> np.ndarray:
        return np.exp(-(xx * xx + yy * yy) / (2 * sigma * sigma)) / (2 * np.pi * sigma * sigma)

    g1, g2 = gauss(2.0), gauss(4.0)

    def masked_contrast(img: np.ndarray) -> np.ndarray:
        filt = np.fft.ifft2(np.fft.ifftshift(np.fft.fftshift(np.fft.fft2(_minmax_255(img))) * csf))
        with np.errstate(divide="ignore", invalid="ignore"):
            c = np.abs(signal.fftconvolve(filt, g1, mode="same") / signal.fftconvolve(filt, g2, mode="same") - 1.0)
        return c**3 / (c**2 + 1e-4)

    ca, cb, cf = masked_contrast(a), masked_contrast(b), masked_contrast(f)
    with np.errstate(divide="ignore", invalid="ignore"):
        qaf = np.where(ca < cf, ca / cf, cf / ca)
        qbf = np.where(cb < cf, cb / cf, cf / cb)
        wa = ca * ca / (ca * ca + cb * cb)
        wb = cb * cb / (ca * ca + cb * cb)
        q = wa * qaf + wb * qbf
    q = q[np.isfinite(q)]
    return float(q.mean()) if q.size else 0.0


# ----------------------------------------------------------------------------- Q_NCIE
def _ncc(x: np.ndarray, y: np.ndarray) -> float:
    """Nonlinear correlation coefficient: (H(X) + H(Y) - H(X, Y)) / log2(256)."""
    return _mutual_information(x, y) / 8.0


def qncie(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """Q_NCIE (Wang, Shen & Jin 2008): nonlinear correlation information entropy.

    Each image is min-max stretched to 0..255 and rounded; NCC of each pair from
    256-bin joint histograms, (H(X) + H(Y) - H(X, Y)) with logs base 256; R = 3x3
    matrix with unit diagonal; Q = 1 + sum_i (l_i / 3) log_256(l_i / 3) over R's
    eigenvalues l_i, at most 1. With these intensity histograms (the standard
    code) NCC(X, X) = H(X) / 8, not 1, so A = B = F scores below 1 (Wang's rank-based
    binning would give 1). Its minimum, for independent images, is 1 - log_256(3) ~ 0.802.
    """
    a, b, f = _grey_set(A=a, B=b, F=f)
    a, b, f = _minmax_255(a), _minmax_255(b), _minmax_255(f)
    nab, naf, nbf = _ncc(a, b), _ncc(a, f), _ncc(b, f)
    r = np.array([[1.0, nab, naf], [nab, 1.0, nbf], [naf, nbf, 1.0]])
    lam = np.linalg.eigvalsh(r) / 3.0
    lam = lam[lam > 1e-15]
    return float(1.0 + (lam * np.log2(lam)).sum() / 8.0)


# ----------------------------------------------------------------------------- registry
#: Canonical metric names -> (display label, function of (a, b, f)).
METRICS: dict[str, tuple[str, Callable[[np.ndarray, np.ndarray, np.ndarray], float]]] = {
    "EN": ("EN", lambda a, b, f: entropy(f)),
    "SD": ("SD", lambda a, b, f: standard_deviation(f)),
    "SF": ("SF", lambda a, b, f: spatial_frequency(f)),
    "AG": ("AG", lambda a, b, f: average_gradient(f)),
    "SCD": ("SCD", scd),
    "SSIM": ("SSIM", ssim),
    "SSIMA": ("SSIM_A", lambda a, b, f: ssim_to_source(a, f)),
    "SSIMB": ("SSIM_B", lambda a, b, f: ssim_to_source(b, f)),
    "MI": ("MI", mutual_information),
    "PSNR": ("PSNR", psnr),
    "VIF": ("VIF", vif),
    "QABF": ("Q_AB/F", qabf),
    "QCB": ("Q_CB", qcb),
    "QNCIE": ("Q_NCIE", qncie),
}

#: Metrics reported per task by default (the paper's tables, plus Q_AB/F for IVIF/MIF).
DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "ivif": ("EN", "SD", "SF", "AG", "SCD", "SSIM", "QABF"),
    "mif": ("EN", "SD", "SF", "AG", "SCD", "SSIM", "QABF"),
    "mfif": ("EN", "SD", "SF", "VIF", "QCB", "QNCIE"),
    "meif": ("EN", "SD", "SF", "VIF", "QCB", "QNCIE"),
}


def canonical_metric(name: str) -> str:
    """'Q_AB/F', 'qabf', 'Q_CB', 'ssim' ... -> the key of :data:`METRICS`; ValueError if unknown."""
    key = name.strip().upper().replace("_", "").replace("/", "").replace("-", "")
    if key not in METRICS:
        raise ValueError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}")
    return key


def compute_metrics(a: np.ndarray, b: np.ndarray, f: np.ndarray, names: tuple[str, ...] | list[str]) -> dict[str, float]:
    """Compute the named metrics (canonical names) of one fused grey image."""
    _grey_set(A=a, B=b, F=f)
    return {n: float(METRICS[n][1](a, b, f)) for n in names}
