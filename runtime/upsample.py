"""Run the network at a lower resolution and keep the full resolution in the output (``--infer-size``).

On a CPU the network's cost grows with the pixel count (about 1.7 s per 480x640 frame
on two cores), while the colour handling around it is cheap. :class:`LowResFusion`
splits one fused frame into:

1. ``prepare``: both sources downscaled with ``cv2.INTER_AREA`` to the inference size
   (a :class:`~refusion.runtime.size.Size`); the colour graph then runs on them exactly as on full-size frames (same
   normalisation state handling, see :class:`refusion.runtime.pipeline.Fuser`);
2. ``finish``: the fused luma Y of the low-resolution output (:func:`graph_luma`, in
   [0, 1]) upsampled to the source resolution (bicubic by default, clipped to [0, 1];
   bilinear on request); the chroma fused by Eq. 15 (``fuse_chroma``, tau 0.5) from
   the *full-resolution* float YCrCb of a and b; YCrCb -> BGR, x255, clip to [0, 255],
   round half up, uint8 - the same last steps as the colour graph.

So only the fused luma loses detail; the chroma is exactly what the full-resolution
path computes (up to the uint8 round trip). With the inference size equal to the
frame size the result equals the normal path within 1 level.

Why not simply the Y of the fused BGR frame: the graph clips B, G, R to [0, 255], and
where a saturated colour was clipped, the Y of the clipped pixel is not the Y the
network produced (up to 19 levels off on MSRS 00004N). :func:`graph_luma` instead
solves each unclipped channel for Y, using the Eq. 15 chroma the graph computed from
the same low-resolution inputs, which recovers the graph's Y within half a level.

No torch here (``refusion.runtime`` never imports it); numpy and OpenCV only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import colour
from .errors import SizeError
from .size import Size

#: Smallest inference width and height in pixels (the network downsamples internally).
MIN_INFER_SIDE = 16
#: ``interpolation`` values -> OpenCV flags (resolved lazily; cv2 is imported on use).
INTERPOLATIONS = ("linear", "cubic")
#: The default luma upsampling. Measured on MSRS 00004N at 240x320 -> 480x640 with the
#: bundled IVIF model (benchmarks/results/infer_size_*.md): see the report for the numbers.
DEFAULT_INTERPOLATION = "cubic"


def graph_luma(fused: np.ndarray, cr: np.ndarray, cb: np.ndarray) -> np.ndarray:
    """The fused Y a colour graph produced, from its uint8 BGR output and its chroma.

    fused: uint8 (h, w, 3) BGR output of the graph; cr, cb: float32 (h, w), the Eq. 15
    chroma (offset 0.5) the graph fused from the same inputs. Each channel strictly
    inside (0, 255) was not clipped and gives Y = channel/255 - its chroma term
    (OpenCV's YCrCb -> BGR inverted); those estimates are averaged. A pixel with every
    channel at 0 or 255 only bounds Y; there the Y of the BGR pixel is clipped into
    those bounds. Returns float32 (h, w) in [0, 1].
    """
    f = fused.astype(np.float32) / 255.0
    dcr, dcb = cr - colour.TAU_FLOAT, cb - colour.TAU_FLOAT
    cand = np.stack(
        [
            f[..., 0] - colour.B_CB * dcb,
            f[..., 1] - colour.G_CR * dcr - colour.G_CB * dcb,
            f[..., 2] - colour.R_CR * dcr,
        ],
        axis=-1,
    )
    free = (fused > 0) & (fused < 255)
    n = free.sum(axis=-1)
    y = (cand * free).sum(axis=-1) / np.maximum(n, 1)
    stuck = n == 0
    if stuck.any():
        c, hi_ch, lo_ch = cand[stuck], fused[stuck] == 255, fused[stuck] == 0
        lower = np.maximum(np.where(hi_ch, c, 0.0).max(axis=-1), 0.0)  # channel >= 255: Y >= its estimate
        upper = np.minimum(np.where(lo_ch, c, 1.0).min(axis=-1), 1.0)  # channel <= 0: Y <= its estimate
        y_bgr = colour.bgr_to_ycrcb(f)[..., 0][stuck]
        y[stuck] = np.minimum(np.maximum(y_bgr, lower), upper)
    return np.clip(y, 0.0, 1.0).astype(np.float32, copy=False)


def fused_chroma(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 15 (tau 0.5) Cr and Cb, float32 (H, W), of two uint8 (H, W, 3) BGR frames."""
    ya = colour.bgr_to_ycrcb(a.astype(np.float32) / 255.0)
    yb = colour.bgr_to_ycrcb(b.astype(np.float32) / 255.0)
    return (
        colour.fuse_chroma(ya[..., 1], yb[..., 1], colour.TAU_FLOAT),
        colour.fuse_chroma(ya[..., 2], yb[..., 2], colour.TAU_FLOAT),
    )


def check_infer_size(infer_size: Size, frame_hw: Size | None = None) -> None:
    """Raise SizeError unless ``infer_size`` fits a frame of size ``frame_hw`` (both in pixels).

    The inference size must be at least :data:`MIN_INFER_SIDE` px per side and (when
    ``frame_hw`` is given) no larger than the frame in either direction (upsampling the
    input would only cost time). Engine-profile limits are checked separately
    (``Backend.check_size``).
    """
    h, w = (int(v) for v in infer_size)
    if w < MIN_INFER_SIDE or h < MIN_INFER_SIDE:
        raise SizeError(f"--infer-size {h}x{w} (HxW) is too small: at least {MIN_INFER_SIDE} px per side")
    if frame_hw is None:
        return
    fh, fw = (int(v) for v in frame_hw)
    if w > fw or h > fh:
        raise SizeError(
            f"--infer-size {h}x{w} (HxW) is larger than the frames ({fh}x{fw}); give a size no larger "
            f"than the frame, or drop --infer-size (or use --size to resize the sources themselves)"
        )


@dataclass(frozen=True)
class LowResFusion:
    """Host-side steps around a colour graph run at a smaller size.

    size: the size the network runs at. interpolation: "linear" or "cubic", how the fused
    Y is upsampled. Stateless: the normalisation state lives in the Fuser that runs
    the graph between :meth:`prepare` and :meth:`finish`.
    """

    size: Size
    interpolation: str = DEFAULT_INTERPOLATION

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, not {self.interpolation!r}")
        if len(self.size) != 2:
            raise ValueError(f"size must be Size(h, w), got {self.size!r}")
        object.__setattr__(self, "size", Size(*self.size))

    def prepare(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """a, b: uint8 (H, W, 3) BGR, same size -> both downscaled to ``size`` (INTER_AREA), C-contiguous."""
        import cv2

        return (
            np.ascontiguousarray(cv2.resize(a, self.size.cv, interpolation=cv2.INTER_AREA)),
            np.ascontiguousarray(cv2.resize(b, self.size.cv, interpolation=cv2.INTER_AREA)),
        )

    def upsample_luma(
        self, fused_small: np.ndarray, small_a: np.ndarray, small_b: np.ndarray, frame_hw: Size
    ) -> np.ndarray:
        """The graph's fused Y (see :func:`graph_luma`) as float32 (H, W) in [0, 1] at ``frame_hw``.

        fused_small: uint8 (h, w, 3) BGR graph output for the inputs small_a, small_b.
        """
        import cv2

        y_small = graph_luma(fused_small, *fused_chroma(small_a, small_b))
        flag = cv2.INTER_CUBIC if self.interpolation == "cubic" else cv2.INTER_LINEAR
        fh, fw = frame_hw
        y = cv2.resize(np.ascontiguousarray(y_small), (int(fw), int(fh)), interpolation=flag)
        if self.interpolation == "cubic":  # bicubic overshoots at edges; the graph's Y is in [0, 1]
            np.clip(y, 0.0, 1.0, out=y)
        return y

    def finish(
        self, fused_small: np.ndarray, small_a: np.ndarray, small_b: np.ndarray, a: np.ndarray, b: np.ndarray
    ) -> np.ndarray:
        """Full-resolution output from the low-resolution fused frame.

        fused_small: uint8 (h, w, 3) BGR from the colour graph run on :meth:`prepare`'s
        frames small_a, small_b. a, b: the full-resolution uint8 (H, W, 3) BGR sources.
        Returns a new uint8 (H, W, 3) BGR array: upsampled fused Y + Eq. 15 chroma of a and b.
        """
        y = self.upsample_luma(fused_small, small_a, small_b, Size.of(a))
        cr, cb = fused_chroma(a, b)
        bgr = colour.ycrcb_to_bgr(np.stack([y, cr, cb], axis=-1).astype(np.float32, copy=False))
        bgr *= 255.0
        np.clip(bgr, 0.0, 255.0, out=bgr)
        bgr += 0.5
        return np.floor(bgr).astype(np.uint8)

    def __call__(self, fuse, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Whole step: ``fuse(a_small, b_small) -> uint8 BGR`` (e.g. a Fuser) run at ``size``."""
        small_a, small_b = self.prepare(a, b)
        return self.finish(fuse(small_a, small_b), small_a, small_b, a, b)
