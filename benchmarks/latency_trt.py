"""Latency rows of TensorRT: a plan built per size from the colour graph, run by rfrun's TensorRT backend."""
from __future__ import annotations

import numpy as np

from refusion.runtime.errors import MissingDependencyError, RefusionError

from .latency_models import Models, Prepared, Skip


def prepare_tensorrt(models: Models, backend: str, graph: str, a: np.ndarray, b: np.ndarray, threads: int) -> Prepared:
    if graph != "colour":
        raise Skip("the TensorRT backend runs colour-graph engines only (rfrun's graph)")
    from refusion.runtime.backends.tensorrt import gpu_count, import_tensorrt

    try:
        import_tensorrt()
    except MissingDependencyError as exc:
        raise Skip(str(exc)) from None
    if gpu_count() == 0:
        raise Skip("no usable NVIDIA GPU (cudaGetDeviceCount found none, or cuda-python is missing)")
    from refusion.export.tensorrt_build import EngineConfig, build_engine
    from refusion.runtime.backends.tensorrt import TensorRTBackend

    precision = "fp16" if backend.endswith("fp16") else "fp32"
    onnx_path = models.onnx("colour", precision)
    plan = onnx_path.with_suffix(".plan")
    h, w = a.shape[:2]
    if not plan.exists():
        try:
            build_engine(EngineConfig(onnx=onnx_path, out=plan, min_size=(h, w), opt_size=(h, w), max_size=(h, w), overwrite=True))
        except RefusionError as exc:
            raise Skip(f"engine build failed: {exc}") from None
    be = TensorRTBackend(plan).open()
    state = np.zeros(3, np.float32)
    plan_for_size = plan

    def close() -> None:
        be.close()
        plan_for_size.unlink(missing_ok=True)  # next size builds its own profile
        plan_for_size.with_name(plan_for_size.name + ".json").unlink(missing_ok=True)

    return Prepared(lambda: be.infer(a, b, state)[0].copy(), lambda out: out, close=close, notes=be.describe())
