"""The one small interface every inference backend implements.

A backend runs the *colour* graph of the export contract on one pair of frames:
``a``, ``b`` uint8 (H, W, 3) BGR and ``norm_state`` float32 (3,) = (lo, hi, alpha)
-> ``fused`` uint8 (H, W, 3) BGR and ``norm_state_out`` float32 (3,). The hot loop
calls :meth:`Backend.infer` without validation; the pipeline checks sizes once per
size change with :meth:`Backend.check_size`.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SizeError
from ..size import Size

#: Tensor names fixed by the export contract.
INPUT_A, INPUT_B, INPUT_STATE = "a", "b", "norm_state"
OUTPUT_FUSED, OUTPUT_STATE = "fused", "norm_state_out"
#: ONNX metadata keys fixed by the export contract.
META_CARD, META_GRAPH, META_PRECISION = "refusion.model_card", "refusion.graph", "refusion.precision"


class Backend(ABC):
    """Open once, ``infer`` per frame, close (or use as a context manager)."""

    #: short backend name, e.g. "onnxruntime" or "tensorrt"
    name: str = "backend"

    def __init__(self, model: str | Path) -> None:
        self.model = Path(model)
        self.device = "cpu"  # "cpu" or "cuda", the device that really runs the graph
        self.card: dict[str, Any] = {}  # the model card (empty when the file has none)
        self.precision = "fp32"
        #: (min, max) accepted frame sizes, or None for any size
        self.size_limits: tuple[Size, Size] | None = None
        self.warnings: list[str] = []  # non-fatal notes from opening, for the caller to report
        self._open = False

    @abstractmethod
    def open(self) -> "Backend":
        """Load the model and allocate what it needs; returns self."""

    @abstractmethod
    def infer(self, a: np.ndarray, b: np.ndarray, norm_state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fuse one pair.

        a, b: uint8 (H, W, 3) BGR, C-contiguous, same size. norm_state: float32 (3,).
        Returns (fused uint8 (H, W, 3) BGR, norm_state_out float32 (3,)). The arrays
        returned may be reused by the next call: copy them to keep them.
        """

    @abstractmethod
    def close(self) -> None:
        """Release everything; safe to call twice."""

    def describe(self) -> str:
        """One line naming the backend and the device/provider that really runs."""
        return f"{self.name} ({self.device})"

    @property
    def sources(self) -> tuple[str, ...]:
        """Source names from the model card in order (a, b), e.g. ("ir", "vis")."""
        names = self.card.get("sources") or ()
        return tuple(str(n) for n in names)

    @property
    def task(self) -> str:
        return str(self.card.get("task", ""))

    def check_size(self, height: int, width: int) -> None:
        """Raise SizeError when (height, width) is outside what the model accepts."""
        if self.size_limits is None:
            return
        (hmin, wmin), (hmax, wmax) = self.size_limits
        if not (hmin <= height <= hmax and wmin <= width <= wmax):
            raise SizeError(
                f"frame size {height}x{width} (HxW) is outside the engine profile "
                f"{hmin}x{wmin} .. {hmax}x{wmax}: resize the sources with --size HxW, or rebuild the "
                f"engine with a profile that covers it (rfexport engine MODEL.fp16.onnx --max-size ...)"
            )

    def __enter__(self) -> "Backend":
        if not self._open:
            self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_card(text: str | None) -> dict[str, Any]:
    """The model card JSON from ONNX metadata or a side-car -> dict ({} when absent or bad)."""
    if not text:
        return {}
    try:
        card = json.loads(text)
    except ValueError:
        return {}
    return card if isinstance(card, dict) else {}
