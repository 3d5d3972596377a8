"""TensorRT backend: a serialised plan run with ``execute_async_v3`` on its own CUDA stream.

Device memory, the stream, pinned host buffers and async copies come from
cuda-python's runtime API (``cuda.bindings.runtime``), which uses the primary
context (the one torch uses too). The GPU is probed with ``cudaGetDeviceCount()``
*before* any TensorRT object is constructed: without a GPU, TensorRT can return a
half-made runtime that segfaults on the next call.

Either the full ``tensorrt`` module or the 45 MB ``tensorrt_lean`` runtime is used
(the lean one only runs version-compatible plans). A version-compatible plan
carries host code; it is only loaded with ``trust_engine_code=True``
(``--trust-engine-code``), because running it executes code from the plan file.
"""
from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import numpy as np

from .._deps import require
from ..errors import EngineError, MissingDependencyError
from .base import INPUT_A, INPUT_B, INPUT_STATE, OUTPUT_FUSED, OUTPUT_STATE, Backend

#: Every TensorRT attribute this backend touches (module, classes, methods, properties,
#: enum members), kept in one place so a test can check them against the real
#: bindings of each supported TensorRT version.
TRT_API_NAMES: tuple[str, ...] = (
    "__version__",
    "Logger",
    "WARNING",
    "Runtime",
    "engine_host_code_allowed",
    "deserialize_cuda_engine",
    "create_execution_context",
    "num_io_tensors",
    "get_tensor_name",
    "get_tensor_mode",
    "get_tensor_profile_shape",
    "TensorIOMode",
    "INPUT",
    "set_input_shape",
    "set_tensor_address",
    "execute_async_v3",
)

#: cuda.bindings.runtime calls used here.
CUDART_API_NAMES: tuple[str, ...] = (
    "cudaGetDeviceCount",
    "cudaSetDevice",
    "cudaGetDeviceProperties",
    "cudaStreamCreate",
    "cudaStreamDestroy",
    "cudaStreamSynchronize",
    "cudaMalloc",
    "cudaFree",
    "cudaMallocHost",
    "cudaFreeHost",
    "cudaMemcpyAsync",
    "cudaMemcpyKind",
)


def _cudart() -> Any:
    return require("cuda.bindings.runtime", "the TensorRT backend (device memory and streams)")


def gpu_count() -> int:
    """Number of CUDA devices, 0 when cuda-python is missing or no GPU/driver is usable.

    Never constructs a TensorRT object.
    """
    try:
        cudart = _cudart()
    except MissingDependencyError:
        return 0
    try:
        err, count = cudart.cudaGetDeviceCount()
    except Exception:  # a broken driver install may raise instead of returning an error code
        return 0
    return int(count) if int(err) == 0 and count else 0


def _check(result: Any, what: str) -> Any:
    """cuda-python returns (err, *values); raise EngineError on a non-zero err."""
    if isinstance(result, tuple):
        err, rest = result[0], result[1:]
    else:
        err, rest = result, ()
    if int(err) != 0:
        raise EngineError(f"CUDA call {what} failed: {err!r}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


def import_tensorrt() -> Any:
    """The full ``tensorrt`` module, else ``tensorrt_lean``, else a MissingDependencyError."""
    try:
        return require("tensorrt", "the TensorRT backend")
    except MissingDependencyError:
        try:
            return require("tensorrt_lean", "the TensorRT backend")
        except MissingDependencyError:
            raise MissingDependencyError(
                "TensorRT is not installed: pip install 'refusion[trt]' (or tensorrt-lean-cu13 for "
                "version-compatible plans), or run the ONNX model with --backend ort"
            ) from None


class _Buffer:
    """A pinned host array and a device allocation of the same size."""

    def __init__(self, cudart: Any, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.cudart = cudart
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self.host_ptr = _check(cudart.cudaMallocHost(self.nbytes), "cudaMallocHost")
        c_arr = ctypes.cast(int(self.host_ptr), ctypes.POINTER(ctypes.c_uint8))
        self.host = np.ctypeslib.as_array(c_arr, (self.nbytes,)).view(self.dtype).reshape(self.shape)
        self.device = _check(cudart.cudaMalloc(self.nbytes), "cudaMalloc")

    def free(self) -> None:
        if self.device is not None:
            self.cudart.cudaFree(self.device)
            self.device = None
        if self.host_ptr is not None:
            self.host = None
            self.cudart.cudaFreeHost(self.host_ptr)
            self.host_ptr = None


class TensorRTBackend(Backend):
    """Runs a colour-graph plan (``*.plan`` with its ``*.plan.json`` side-car)."""

    name = "tensorrt"

    def __init__(self, model: str | Path, trust_engine_code: bool = False, device_id: int = 0) -> None:
        super().__init__(model)
        self.trust_engine_code = trust_engine_code
        self.device_id = device_id
        self.device = "cuda"
        self.sidecar: dict[str, Any] = {}
        self.trt: Any = None
        self.cudart: Any = None
        self._runtime = self._engine = self._context = None
        self._stream = None
        self._buffers: dict[str, _Buffer] = {}
        self._shape: tuple[int, ...] | None = None
        self.gpu_name = ""

    def open(self) -> "TensorRTBackend":
        if not self.model.is_file():
            raise EngineError(f"engine not found: {self.model}")
        from ..sidecar import check_sidecar, read_sidecar

        self.cudart = _cudart()
        if gpu_count() == 0:
            raise EngineError(
                "TensorRT needs an NVIDIA GPU and driver, and none is usable here "
                "(cudaGetDeviceCount failed or found 0 devices); run the ONNX model with --backend ort"
            )
        self.trt = trt = import_tensorrt()
        _check(self.cudart.cudaSetDevice(self.device_id), "cudaSetDevice")
        props = _check(self.cudart.cudaGetDeviceProperties(self.device_id), "cudaGetDeviceProperties")
        name = props.name
        self.gpu_name = (name.decode(errors="replace") if isinstance(name, bytes) else str(name)).rstrip("\0")
        capability = (int(props.major), int(props.minor))

        self.sidecar = read_sidecar(self.model)
        if self.sidecar.get("graph", "colour") != "colour":
            raise EngineError(
                f"{self.model.name} was built from the {self.sidecar.get('graph')!r} graph; rfrun runs engines "
                "built from the colour graph: rfexport engine MODEL.colour.fp16.onnx"
            )
        check_sidecar(
            self.sidecar,
            trt.__version__,
            self.gpu_name,
            capability,
            lean=trt.__name__.startswith("tensorrt_lean"),
            plan_path=self.model,
            warn=self.warnings.append,
        )
        self.card = dict(self.sidecar.get("model_card") or {})
        self.precision = str(self.sidecar.get("precision", "fp16"))
        version_compatible = bool(self.sidecar.get("version_compatible", False))
        if version_compatible and not self.trust_engine_code:
            raise EngineError(
                f"{self.model.name} is a version-compatible plan, which runs host code stored in the file; "
                "load it only if you trust where it came from, with --trust-engine-code"
            )

        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if version_compatible:
            self._runtime.engine_host_code_allowed = True
        self._engine = self._runtime.deserialize_cuda_engine(self.model.read_bytes())
        if self._engine is None:
            raise EngineError(
                f"TensorRT {trt.__version__} cannot load {self.model.name} (built for another TensorRT "
                "version or GPU, or a lean runtime given a plan that is not version-compatible); rebuild it "
                "here: rfexport engine MODEL.fp16.onnx"
            )
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        need = {INPUT_A, INPUT_B, INPUT_STATE, OUTPUT_FUSED, OUTPUT_STATE}
        if not need <= set(names):
            raise EngineError(
                f"{self.model.name} is not a refusion colour-graph engine: tensors {names}, expected {sorted(need)}"
            )
        inputs = {n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT}
        if inputs != {INPUT_A, INPUT_B, INPUT_STATE}:
            raise EngineError(f"{self.model.name}: engine inputs are {sorted(inputs)}, expected a, b, norm_state")
        mins, _opt, maxs = self._engine.get_tensor_profile_shape(INPUT_A, 0)
        self.size_limits = ((int(mins[0]), int(mins[1])), (int(maxs[0]), int(maxs[1])))
        self._stream = _check(self.cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._open = True
        return self

    def describe(self) -> str:
        ver = getattr(self.trt, "__version__", "?")
        return f"tensorrt {ver} ({self.gpu_name}, {self.precision})"

    def _allocate(self, shape: tuple[int, ...]) -> None:
        for buf in self._buffers.values():
            buf.free()
        self._buffers = {}
        h, w = shape[:2]
        self._context.set_input_shape(INPUT_A, (h, w, 3))
        self._context.set_input_shape(INPUT_B, (h, w, 3))
        self._context.set_input_shape(INPUT_STATE, (3,))
        specs = {
            INPUT_A: ((h, w, 3), np.uint8),
            INPUT_B: ((h, w, 3), np.uint8),
            INPUT_STATE: ((3,), np.float32),
            OUTPUT_FUSED: ((h, w, 3), np.uint8),
            OUTPUT_STATE: ((3,), np.float32),
        }
        for name, (shp, dtype) in specs.items():
            buf = _Buffer(self.cudart, shp, dtype)
            self._buffers[name] = buf
            self._context.set_tensor_address(name, int(buf.device))
        self._shape = tuple(shape)

    def infer(self, a: np.ndarray, b: np.ndarray, norm_state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if a.shape != self._shape:
            self._allocate(a.shape)
        cudart, stream, bufs = self.cudart, self._stream, self._buffers
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, arr in ((INPUT_A, a), (INPUT_B, b), (INPUT_STATE, norm_state)):
            buf = bufs[name]
            np.copyto(buf.host, arr, casting="no")
            _check(cudart.cudaMemcpyAsync(buf.device, buf.host_ptr, buf.nbytes, h2d, stream), "cudaMemcpyAsync")
        if not self._context.execute_async_v3(int(stream)):
            raise EngineError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
        for name in (OUTPUT_FUSED, OUTPUT_STATE):
            buf = bufs[name]
            _check(cudart.cudaMemcpyAsync(buf.host_ptr, buf.device, buf.nbytes, d2h, stream), "cudaMemcpyAsync")
        _check(cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        return bufs[OUTPUT_FUSED].host, bufs[OUTPUT_STATE].host

    def close(self) -> None:
        if self._stream is not None and self.cudart is not None:
            self.cudart.cudaStreamSynchronize(self._stream)
        for buf in self._buffers.values():
            buf.free()
        self._buffers = {}
        if self._stream is not None and self.cudart is not None:
            self.cudart.cudaStreamDestroy(self._stream)
        self._stream = None
        self._context = self._engine = self._runtime = None
        self._shape = None
        self._open = False
