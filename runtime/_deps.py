"""Import heavy optional modules lazily, with an actionable message when absent."""
from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

# module name -> (what it is for, how to get it)
_HINTS: dict[str, str] = {
    "torch": "pip install 'refusion[train]' (CPU build: pip install torch==2.13.0)",
    "onnx": "pip install 'refusion[export]'",
    "onnxscript": "pip install 'refusion[export]'",
    "onnxruntime": "pip install 'refusion[cpu]' (or 'refusion[gpu]' for CUDA)",
    "tensorrt": "pip install 'refusion[trt]', or run the ONNX model with --backend ort",
    "tensorrt_lean": "pip install tensorrt-lean-cu13, or run the ONNX model with --backend ort",
    "tensorrt_rtx": "pip install tensorrt-rtx-cu13, or run the ONNX model with --backend ort",
    "cuda.bindings": "pip install cuda-python",
    "scipy": "pip install scipy",
    "tensorboard": "pip install tensorboard",
}


def require(module: str, feature: str = "") -> ModuleType:
    """Import ``module`` or raise MissingDependencyError naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        # the hint of the longest listed parent ("cuda.bindings" for "cuda.bindings.runtime")
        parents = [module.rsplit(".", i)[0] for i in range(module.count(".") + 1)]
        hint = next((_HINTS[p] for p in parents if p in _HINTS), f"pip install {module.split('.')[0]}")
        what = f" (needed for {feature})" if feature else ""
        raise MissingDependencyError(f"{module} is not installed{what}: {hint}") from exc


def available(module: str) -> bool:
    """True when ``module`` can be imported (imports it)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
