"""A procedural infrared/visible demo sequence: no data, no GPU, deterministic.

The scene: a textured landscape with a sky, buildings with windows and trees seen by
both cameras; warm people and a car move through it. In the *infrared* frame
(source a) the background is cool and smooth and the moving objects are hot and
bright; in the *visible* frame (source b) the background carries the colour and
fine texture but the people wear clothes that blend into it and one of them walks
through a bank of smoke. A good fusion keeps the visible texture and colour and
adds the warm targets. Frame i depends only on (i, size, seed).
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs

import numpy as np

from .errors import SourceError
from .size import Size
from .source_base import Source

DEFAULT_FRAMES = 60
DEFAULT_SIZE = Size(240, 320)
DEMO_FPS = 15.0


@dataclass(frozen=True)
class _Walker:
    y: float  # foot line as a fraction of H
    x0: float  # start x as a fraction of W
    speed: float  # fraction of W per frame (negative: right to left)
    height: float  # body height as a fraction of H
    temp: float  # IR brightness 0..255
    in_smoke: bool = False


class DemoScene:
    """Renders frame pairs of the demo scene at (width, height)."""

    def __init__(self, width: int = DEFAULT_SIZE.w, height: int = DEFAULT_SIZE.h, seed: int = 0) -> None:
        if width < 32 or height < 32:
            raise SourceError(f"demo frames must be at least 32x32, got {height}x{width} (HxW)")
        self.w, self.h, self.seed = int(width), int(height), int(seed)
        rng = np.random.default_rng(self.seed)
        self.horizon = int(self.h * 0.42)
        self._vis_bg, self._ir_bg = self._background(rng)
        self.walkers = (
            _Walker(0.80, 0.05, 0.006, 0.30, 235.0),
            _Walker(0.70, 0.90, -0.004, 0.24, 220.0, in_smoke=True),
            _Walker(0.92, 0.55, 0.0025, 0.36, 245.0),
        )
        self.smoke_x = (0.55, 0.85)  # the smoke bank spans this part of the width

    def _noise(self, rng: np.random.Generator, cells: int) -> np.ndarray:
        import cv2

        small = rng.random((max(2, cells * self.h // self.w), cells), dtype=np.float32)
        return cv2.resize(small, (self.w, self.h), interpolation=cv2.INTER_CUBIC)

    def _background(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        h, w, hz = self.h, self.w, self.horizon
        yy = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None] * np.ones((1, w), np.float32)
        texture = 0.5 * self._noise(rng, 6) + 0.3 * self._noise(rng, 24) + 0.2 * self._noise(rng, 80)
        grain = rng.random((h, w), dtype=np.float32)
        vis = np.zeros((h, w, 3), np.float32)
        # sky: light blue, brighter towards the horizon
        sky = np.clip(yy / max(hz / h, 1e-3), 0, 1)
        vis[..., 0] = 200 + 40 * sky
        vis[..., 1] = 150 + 60 * sky
        vis[..., 2] = 110 + 70 * sky
        # ground: grass and earth with fine texture
        ground = yy >= hz / h
        g = texture * 0.8 + grain * 0.2
        vis[ground, 0] = (40 + 40 * g)[ground]
        vis[ground, 1] = (90 + 80 * g)[ground]
        vis[ground, 2] = (60 + 70 * g)[ground]
        ir = np.where(ground, 105 + 30 * texture, 40 + 20 * sky).astype(np.float32)
        # buildings with windows on the horizon (windows only show in the visible image)
        x = int(w * 0.05)
        while x < w * 0.95:
            bw = int(w * rng.uniform(0.07, 0.14))
            bh = int(h * rng.uniform(0.12, 0.25))
            top = hz - bh
            shade = rng.uniform(120, 190)
            vis[top:hz, x:x + bw] = (shade * 0.95, shade, shade * 1.05)
            ir[top:hz, x:x + bw] = 95 + rng.uniform(-10, 10)
            step = max(4, w // 60)
            for wy in range(top + step, hz - step, 2 * step):
                for wx in range(x + step // 2, x + bw - step, 2 * step):
                    vis[wy:wy + step, wx:wx + step] = (70, 60, 50)
            x += bw + int(w * rng.uniform(0.02, 0.08))
        # trees: dark green blobs, slightly warmer than the grass in IR
        for _ in range(5):
            cx, cy = int(rng.uniform(0, w)), int(hz + rng.uniform(-0.02, 0.05) * h)
            r = int(h * rng.uniform(0.05, 0.09))
            cv2.circle(vis, (cx, cy - r), r, (30, 70, 35), -1, cv2.LINE_AA)
            cv2.circle(ir, (cx, cy - r), r, 125.0, -1, cv2.LINE_AA)
        ir = cv2.GaussianBlur(ir, (0, 0), 1.2)
        return vis, ir

    def frame(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``index`` -> (infrared, visible), uint8 (H, W, 3) BGR; IR has 3 equal channels."""
        import cv2

        h, w = self.h, self.w
        vis = self._vis_bg.copy()
        ir = self._ir_bg.copy()
        t = float(index)
        # the car: a warm engine and exhaust, paint that shows in the visible image
        cx = int(((0.9 - 0.01 * t) % 1.2 - 0.1) * w)
        cy = int(h * 0.62)
        cw, ch = int(w * 0.16), int(h * 0.08)
        cv2.rectangle(vis, (cx, cy - ch), (cx + cw, cy), (40, 40, 170), -1)
        cv2.rectangle(vis, (cx + cw // 5, cy - ch - ch // 2), (cx + cw * 3 // 4, cy - ch), (60, 50, 140), -1)
        cv2.rectangle(ir, (cx, cy - ch), (cx + cw, cy), 150.0, -1)
        cv2.rectangle(ir, (cx + cw - cw // 4, cy - ch), (cx + cw, cy), 215.0, -1)
        for wx in (cx + cw // 5, cx + cw * 4 // 5):
            cv2.circle(vis, (wx, cy), ch // 3, (20, 20, 20), -1)
            cv2.circle(ir, (wx, cy), ch // 3, 190.0, -1)
        # people: hot in IR, camouflaged in the visible image
        for k, p in enumerate(self.walkers):
            px = ((p.x0 + p.speed * t) % 1.1 - 0.05) * w
            foot = p.y * h + 1.5 * np.sin(0.6 * t + k)
            bh = p.height * h
            body = (int(px), int(foot - bh * 0.45))
            axes = (max(2, int(bh * 0.14)), max(3, int(bh * 0.38)))
            head = (int(px), int(foot - bh * 0.88))
            hr = max(2, int(bh * 0.1))
            g = float(self._vis_bg[min(h - 1, int(foot)), min(w - 1, max(0, int(px)))].mean())
            cloth = (g * 0.8, g * 0.95, g * 0.85)
            cv2.ellipse(vis, body, axes, 0, 0, 360, cloth, -1, cv2.LINE_AA)
            cv2.circle(vis, head, hr, (g * 0.7, g * 0.8, g * 0.95), -1, cv2.LINE_AA)
            cv2.ellipse(ir, body, axes, 0, 0, 360, p.temp - 15, -1, cv2.LINE_AA)
            cv2.circle(ir, head, hr, p.temp, -1, cv2.LINE_AA)
        # a bank of smoke hides part of the visible scene (IR sees through it)
        x0, x1 = int(self.smoke_x[0] * w), int(self.smoke_x[1] * w)
        ramp = np.clip(np.minimum(np.arange(w) - x0, x1 - np.arange(w)) / (0.06 * w), 0, 1).astype(np.float32)
        drift = 0.15 * np.sin(np.linspace(0, 3 * np.pi, h, dtype=np.float32)[:, None] + 0.1 * t)
        alpha = np.clip(ramp[None, :] * (0.8 + drift), 0, 0.92)[..., None]
        vis = vis * (1 - alpha) + 190.0 * alpha
        # sensor noise, deterministic per frame
        rng = np.random.default_rng((self.seed, index))
        ir = ir + rng.normal(0, 2.0, ir.shape).astype(np.float32)
        vis = vis + rng.normal(0, 3.0, vis.shape).astype(np.float32)
        ir8 = np.clip(ir + 0.5, 0, 255).astype(np.uint8)
        vis8 = np.clip(vis + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(ir8[..., None], 3, axis=2), vis8


class DemoSource(Source):
    """One role ("ir" = source a, "vis" = source b) of the demo scene, delivered like a file."""

    def __init__(self, which: str, frames: int = DEFAULT_FRAMES, size: Size = DEFAULT_SIZE,
                 seed: int = 0, role: str = "") -> None:
        if which not in ("ir", "vis"):
            raise SourceError(f"demo source must be demo:ir or demo:vis, not demo:{which}")
        size = Size(*size)
        super().__init__(f"demo:{which} ({frames} frames, {size})", role)
        self.which, self.frames, self.size, self.seed = which, int(frames), size, seed
        self.length = self.frames
        self.fps = DEMO_FPS
        self._scene: DemoScene | None = None
        self._next = 0

    def _open(self) -> None:
        self._scene = DemoScene(self.size.w, self.size.h, self.seed)

    def _grab(self) -> np.ndarray | None:
        if self._next >= self.frames:
            return None
        ir, vis = self._scene.frame(self._next)
        self._next += 1
        return ir if self.which == "ir" else vis


def demo_spec(which: str, frames: int = DEFAULT_FRAMES, size: Size = DEFAULT_SIZE, seed: int = 0) -> str:
    """The source string for the demo, e.g. ``demo:ir?frames=60&size=240x320&seed=0`` (size written HxW)."""
    return f"demo:{which}?frames={frames}&size={Size(*size)}&seed={seed}"


def demo_source(spec: str, role: str = "") -> DemoSource:
    """Parse ``demo:ir?frames=N&size=HxW&seed=S`` (options optional) into a DemoSource."""
    body = spec[len("demo:"):]
    which, _, query = body.partition("?")
    opts = {k: v[-1] for k, v in parse_qs(query).items()}
    try:
        frames = int(opts.get("frames", DEFAULT_FRAMES))
        h, w = (int(v) for v in opts.get("size", str(DEFAULT_SIZE)).lower().split("x"))
        seed = int(opts.get("seed", 0))
    except ValueError:
        raise SourceError(f"cannot parse demo source {spec!r}; expected demo:ir?frames=60&size=240x320&seed=0") from None
    if frames < 1:
        raise SourceError(f"demo source needs at least one frame, got frames={frames}")
    return DemoSource(which, frames, Size(h, w), seed, role)
