"""TensorRT backend: a serialised plan run with ``execute_async_v3`` on its own CUDA stream.

Device memory, the stream, pinned host buffers and async copies come from
cuda-python's runtime API (``cuda.bindings.runtime``), which uses the primary
context (the one torch uses too). The GPU is probed with ``cudaGetDeviceCount()``
*before* any TensorRT object is constructed: without a GPU, TensorRT can return a
half-made runtime that segfaults on the next call.

The plan's side-car names the TensorRT flavour that built it, and the same flavour
loads it: the full ``tensorrt`` module or the 45 MB ``tensorrt_lean`` runtime for
TensorRT 10.x/11.x plans (the lean one only runs version-compatible plans), the
``tensorrt_rtx`` module for TensorRT-RTX plans. TensorRT-RTX compiles its kernels for
the GPU at first use; they are kept in a runtime cache file beside the plan
(``<plan>.runtime-cache``) so later starts skip that. A version-compatible plan
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

#: Runtime names used only with tensorrt_rtx plans (runtime cache), checked against the installed tensorrt_rtx.
RTX_API_NAMES: tuple[str, ...] = (
    "create_runtime_config",
    "create_runtime_cache",
    "set_runtime_cache",
    "deserialize",
    "serialize",
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


def import_tensorrt(flavour: str = "tensorrt", version: str = "") -> Any:
    """The module that loads plans of ``flavour``.

    "tensorrt": the full ``tensorrt`` module, else ``tensorrt_lean``; "tensorrt_rtx": the
    ``tensorrt_rtx`` module. MissingDependencyError (with the install command) otherwise.
    """
    if flavour == "tensorrt_rtx":
        try:
            return require("tensorrt_rtx", "TensorRT-RTX engines")
        except MissingDependencyError:
            pin = f"=={version}" if version else ""
            raise MissingDependencyError(
                f"this plan was built with TensorRT-RTX, which is not installed: pip install tensorrt-rtx-cu13{pin}, "
                "or run the ONNX model with --backend ort"
            ) from None
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
        self.flavour = "tensorrt"
        self._runtime_cache: Any = None
        self._runtime_config: Any = None

    def open(self) -> "TensorRTBackend":
        if not self.model.is_file():
            raise EngineError(f"engine not found: {self.model}")
        from ..sidecar import check_sidecar, plan_flavour, read_sidecar, rtx_targets_text

        self.sidecar = read_sidecar(self.model)
        self.flavour = flavour = plan_flavour(self.sidecar)
        built = f"{flavour} {self.sidecar.get('tensorrt_version', '?')}"
        if gpu_count() == 0:
            where = rtx_targets_text(self.sidecar) if flavour == "tensorrt_rtx" else (
                f"{self.sidecar.get('gpu_name') or 'an NVIDIA GPU'}")
            onnx = str(self.sidecar.get("onnx_file") or "MODEL.colour.fp16.onnx").replace(".fp16.onnx", ".onnx")
            raise EngineError(
                f"{self.model.name} is a {built} engine (for {where}); running it needs an NVIDIA GPU with its "
                "driver and cuda-python, and none is usable here (cudaGetDeviceCount failed or found 0 devices); "
                f"on this machine run the ONNX model on the CPU instead: rfrun -m {onnx} --backend ort"
            )
        self.cudart = _cudart()
        self.trt = trt = import_tensorrt(flavour, str(self.sidecar.get("tensorrt_version", "")))
        _check(self.cudart.cudaSetDevice(self.device_id), "cudaSetDevice")
        props = _check(self.cudart.cudaGetDeviceProperties(self.device_id), "cudaGetDeviceProperties")
        name = props.name
        self.gpu_name = (name.decode(errors="replace") if isinstance(name, bytes) else str(name)).rstrip("\0")
        capability = (int(props.major), int(props.minor))

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
            flavour="tensorrt_rtx" if trt.__name__.startswith("tensorrt_rtx") else "tensorrt",
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
        if flavour == "tensorrt_rtx":
            self._context = self._engine.create_execution_context(self._rtx_runtime_config())
        else:
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

    @property
    def runtime_cache_path(self) -> Path:
        """``<plan>.runtime-cache``: TensorRT-RTX kernels compiled for this GPU."""
        return self.model.with_name(self.model.name + ".runtime-cache")

    def _rtx_runtime_config(self) -> Any:
        """A runtime config with the runtime cache loaded from disk when it fits this GPU and version."""
        config = self._engine.create_runtime_config()
        self._runtime_cache = cache = config.create_runtime_cache()
        path = self.runtime_cache_path
        if path.is_file():
            try:
                loaded = cache.deserialize(path.read_bytes())
            except OSError:
                loaded = False
            if not loaded:
                self.warnings.append(f"{path.name} was made for another GPU or TensorRT-RTX version; it is rebuilt")
        config.set_runtime_cache(cache)
        self._runtime_config = config
        return config

    def _save_runtime_cache(self) -> None:
        from ..fsutil import atomic_write_bytes

        cache = getattr(self, "_runtime_cache", None)
        if cache is None:
            return
        try:
            blob = cache.serialize()
            if blob is not None:
                atomic_write_bytes(self.runtime_cache_path, bytes(blob))
        except OSError as exc:  # a read-only model folder: run on, just without the cache next time
            import logging

            logging.getLogger(__name__).warning("cannot save the TensorRT-RTX runtime cache %s: %s", self.runtime_cache_path, exc)

    def describe(self) -> str:
        ver = getattr(self.trt, "__version__", "?")
        return f"{self.flavour} {ver} ({self.gpu_name}, {self.precision})"

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
        if self._context is not None:
            self._save_runtime_cache()
        self._context = self._engine = self._runtime = None
        self._runtime_cache = self._runtime_config = None
        self._shape = None
        self._open = False
