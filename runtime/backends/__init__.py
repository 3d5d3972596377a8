"""Inference backends behind one interface (:class:`~.base.Backend`), chosen by :func:`open_backend`.

Nothing heavy is imported here: onnxruntime, tensorrt, cuda-python and torch are
imported when a backend is opened.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import EngineError, MissingDependencyError
from .base import Backend

#: Values of ``--backend``.
BACKENDS = ("auto", "tensorrt", "ort", "ort-cuda", "ort-cpu", "torch")

__all__ = ["BACKENDS", "Backend", "make_backend", "open_backend"]


def make_backend(model: str | Path, backend: str = "auto", trust_engine_code: bool = False) -> Backend:
    """Build (but do not open) the backend for ``model``; see :func:`open_backend`."""
    model = Path(model)
    if backend not in BACKENDS:
        raise EngineError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    is_plan = model.suffix in (".plan", ".engine", ".trt")
    if backend == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend(model)
    if backend == "tensorrt" or (backend == "auto" and is_plan):
        if not is_plan:
            raise EngineError(
                f"--backend tensorrt needs a TensorRT plan (*.plan), not {model.name}; build one with "
                "rfexport engine MODEL.fp16.onnx, or run this ONNX model with --backend ort"
            )
        from .tensorrt import TensorRTBackend

        return TensorRTBackend(model, trust_engine_code=trust_engine_code)
    if is_plan:
        raise EngineError(f"{model.name} is a TensorRT plan; run it with --backend tensorrt (or auto)")
    from .ort import OrtBackend

    device = {"auto": "auto", "ort": "auto", "ort-cuda": "cuda", "ort-cpu": "cpu"}[backend]
    return OrtBackend(model, device=device)


def open_backend(model: str | Path, backend: str = "auto", trust_engine_code: bool = False) -> Backend:
    """Open the best backend that really runs ``model``.

    ``auto``: a ``*.plan`` runs on TensorRT; an ONNX file on onnxruntime with the CUDA
    provider when it really runs (``session.get_providers()``), else the CPU provider.
    ``ort-cuda`` fails instead of falling back. ``torch`` runs a PyTorch checkpoint (or the
    checkpoint beside a colour ONNX) on CUDA when torch sees a GPU, else on the CPU. Raises EngineError or
    MissingDependencyError with one clear message.
    """
    model = Path(model)
    if not model.is_file():
        raise EngineError(f"model not found: {model}")
    if model.suffix.lower() in (".pt", ".pth") and backend != "torch":
        raise EngineError(
            f"{model} is a PyTorch checkpoint; rfrun runs the colour ONNX graph or a TensorRT plan: "
            f"export it first with `rfexport {model}` and pass {model.stem}.colour.onnx, or run it with --backend torch"
        )
    be = make_backend(model, backend, trust_engine_code)
    try:
        be.open()
    except (EngineError, MissingDependencyError):
        be.close()
        raise
    return be
