"""Per-epoch PNG panel: sources, fused image, and P's weight maps w_a, v_a as heat maps
with a colour bar (as the paper's Figs. 8-12 show them), so the learned loss can be watched."""
from __future__ import annotations

import numpy as np

TILE = 256  # longer side of each tile in pixels
LABEL_H = 22


def _grey_tile(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    g = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    g = cv2.resize(g, size, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(g, cv2.COLOR_GRAY2BGR)


def _heat_tile(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    g = np.clip(m * 255.0 + 0.5, 0, 255).astype(np.uint8)  # fixed scale: 0 -> 0, 1 -> 255
    g = cv2.resize(g, size, interpolation=cv2.INTER_NEAREST)
    return cv2.applyColorMap(g, cv2.COLORMAP_JET)


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    import cv2

    bar = np.full((LABEL_H, tile.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (4, LABEL_H - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([bar, tile])


def _colour_bar(height: int) -> np.ndarray:
    import cv2

    ramp = np.linspace(255, 0, height).astype(np.uint8)[:, None].repeat(18, axis=1)
    bar = cv2.applyColorMap(ramp, cv2.COLORMAP_JET)
    canvas = np.full((height, 56, 3), 255, np.uint8)
    canvas[:, :18] = bar
    for val, y in ((1.0, 10), (0.5, height // 2 + 4), (0.0, height - 3)):
        cv2.putText(canvas, f"{val:.1f}", (21, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def make_panel(
    a: np.ndarray, b: np.ndarray, fused: np.ndarray, w_a: np.ndarray, v_a: np.ndarray,
    names: tuple[str, str] = ("a", "b"), title: str = "",
) -> np.ndarray:
    """Panel as uint8 BGR. All inputs float (H, W) in [0, 1] of the same size."""
    import cv2

    h, w = a.shape
    s = TILE / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    tiles = [
        _label(_grey_tile(a, size), names[0]),
        _label(_grey_tile(b, size), names[1]),
        _label(_grey_tile(fused, size), "fused"),
        _label(_heat_tile(w_a, size), f"w_{names[0]} (mean {w_a.mean():.2f})"),
        _label(_heat_tile(v_a, size), f"v_{names[0]} (mean {v_a.mean():.2f})"),
    ]
    row = np.hstack([np.hstack([t, np.full((t.shape[0], 4, 3), 255, np.uint8)]) for t in tiles])
    bar = _colour_bar(size[1])
    bar = np.vstack([np.full((LABEL_H, bar.shape[1], 3), 255, np.uint8), bar])
    panel = np.hstack([row, bar])
    if title:
        head = np.full((LABEL_H, panel.shape[1], 3), 255, np.uint8)
        cv2.putText(head, title, (4, LABEL_H - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        panel = np.vstack([head, panel])
    return panel
