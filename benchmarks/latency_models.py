"""What every latency row runs on: the input pair, the network and its ONNX exports, and the runner contract.

A row's ``prepare_*`` function (one module per backend family: :mod:`.latency_torch`,
:mod:`.latency_ort`, :mod:`.latency_trt`) returns a :class:`Prepared` for one (graph, size),
or raises :class:`Skip` when the backend cannot run here.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .latency_config import LatencyConfig


def input_pair(config: LatencyConfig) -> tuple[np.ndarray, np.ndarray]:
    """The uint8 BGR pair every row runs on (resized per size)."""
    if config.pair is None:
        from refusion.export.onnx_export import synthetic_pair

        return synthetic_pair(480, 640)
    from refusion.runtime.imageio import read_image

    return read_image(config.pair[0]), read_image(config.pair[1])


def resize_pair(pair: tuple[np.ndarray, np.ndarray], h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    a, b = (np.ascontiguousarray(cv2.resize(x, (w, h), interpolation=cv2.INTER_AREA)) for x in pair)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if b.ndim == 2:
        b = np.repeat(b[..., None], 3, axis=2)
    return a, b


def core_inputs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Y planes of two uint8 BGR frames as float32 (1, 1, H, W) in [0, 1]."""
    from refusion.runtime.colour import luma_bgr

    return luma_bgr(a)[None, None].astype(np.float32), luma_bgr(b)[None, None].astype(np.float32)


class Models:
    """Loads the network once and exports the ONNX files the rows need, on demand."""

    def __init__(self, config: LatencyConfig, work_dir: Path, say: Callable[[str], None]) -> None:
        self.config, self.dir, self.say = config, work_dir, say
        self._loaded: Any = None
        self._files: dict[str, Path] = {}

    @property
    def loaded(self) -> Any:
        if self._loaded is None:
            from refusion.train.checkpoint import load_fusion_model

            self._loaded = load_fusion_model(self.config.model, self.config.task)
        return self._loaded

    def load(self) -> Any:
        """The loaded network; a file that is no fusion model raises its one clear error here."""
        return self.loaded

    def onnx(self, graph: str, precision: str = "fp32", optimized: bool = False) -> Path:
        """Path of the ONNX file (exported with ``refusion.export``), optionally with the export-time rewrites."""
        key = f"{graph}.{precision}" + (".opt" if optimized else "")
        if key in self._files:
            return self._files[key]
        path = self.dir / f"model.{key}.onnx"
        if optimized:
            import onnx

            from refusion.export.optimize import optimize_model

            raw = self.onnx(graph, precision)
            model, rep = optimize_model(onnx.load(str(raw)))
            onnx.save(model, str(path))
            self.say(f"{path.name}: {rep.describe()}")
        else:
            import inspect

            from refusion.export.onnx_export import build_card, export_graph

            # The unoptimised reference is the graph as traced: when the exporter applies
            # export/optimize.py itself (``optimize=True``), ask it not to here.
            extra = {"optimize": False} if "optimize" in inspect.signature(export_graph).parameters else {}
            t0 = time.perf_counter()
            export_graph(self.loaded.net, graph, precision == "fp16", path, build_card(self.loaded), **extra)
            self.say(f"exported {path.name} in {time.perf_counter() - t0:.1f} s")
        self._files[key] = path
        return path

    def torch_module(self, graph: str, half: bool) -> Any:
        from refusion.export.graphs import ColourGraph, CoreGraph, exportable

        net = exportable(self.loaded.net, half=half)
        return (CoreGraph if graph == "core" else ColourGraph)(net, half=half).eval()


# ----------------------------------------------------------------------------- runners
# A runner prepares one (graph, size) and returns ``step() -> output`` (host numpy for
# comparisons is produced by ``fetch(output)``); ``sync()`` waits for the device.


@dataclass
class Prepared:
    step: Callable[[], Any]
    fetch: Callable[[Any], np.ndarray]
    sync: Callable[[], None] = lambda: None
    close: Callable[[], None] = lambda: None
    notes: str = ""


class Skip(Exception):
    """This backend cannot run here; the message says why."""


def torch_or_skip() -> Any:
    try:
        import torch
    except ImportError:
        raise Skip("PyTorch is not installed (pip install torch)") from None
    return torch


def ort_or_skip() -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise Skip("onnxruntime is not installed (pip install 'refusion[cpu]' or 'refusion[gpu]')") from None
    return ort


def core_feeds(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    ya, yb = core_inputs(a, b)
    return {"a": ya, "b": yb}


def colour_feeds(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    return {"a": a, "b": b, "norm_state": np.zeros(3, np.float32)}
