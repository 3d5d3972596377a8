"""TensorRT backend: a serialised plan run with ``execute_async_v3`` on its own CUDA stream.

Two halves, as in Polygraphy: the loader :func:`load_engine` reads the side-car, checks the
GPU, the TensorRT version, trust and the I/O tensors and deserialises the plan into a
:class:`LoadedEngine` (no execution context, no stream: benchmarks, export checks and tests
use it alone); the runner :class:`TensorRTBackend` adds the context, the stream and the
pinned buffers, and only runs.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .._deps import require
from ..errors import EngineError, MissingDependencyError
from ..size import Size
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


# -- loader: find, check and deserialise a plan; no execution context, no stream --------------------
@dataclass
class LoadedEngine:
    """A plan that :func:`load_engine` read, checked and deserialised, ready for a runner.

    Reusable without running anything (benchmarks, export checks, tests): it holds no
    execution context, no stream and no device buffers.
    """

    plan: Path  # the ``*.plan`` file
    sidecar: dict[str, Any]  # its ``*.plan.json``
    flavour: str  # "tensorrt" (full or lean module) or "tensorrt_rtx"
    trt: Any  # the TensorRT module that loaded it
    logger: Any  # trt.Logger, kept referenced as long as the runtime
    runtime: Any  # trt.Runtime
    engine: Any  # trt.ICudaEngine
    gpu_name: str  # the GPU that runs it, e.g. "NVIDIA H100 80GB HBM3"
    compute_capability: tuple[int, int]  # (major, minor) of that GPU
    card: dict[str, Any]  # the model card from the side-car
    precision: str  # "fp16" or "fp32", from the side-car
    size_limits: tuple[Size, Size]  # (min, max) frame size of the optimisation profile
    warnings: list[str] = field(default_factory=list)  # non-fatal notes (e.g. built on another GPU name)


def load_engine(plan: str | Path, trust_engine_code: bool = False, device_id: int = 0) -> LoadedEngine:
    """Read, check and deserialise a colour-graph plan on CUDA device ``device_id``.

    In this order, so that a plan that cannot run here is refused before any TensorRT object
    exists: the side-car, a usable GPU, the TensorRT module of the plan's flavour, the GPU's
    name and compute capability, the side-car against them, trust for host code, then the
    deserialised engine and its I/O tensors (a, b uint8 (H, W, 3); norm_state float32 (3,)).
    Raises EngineError (or MissingDependencyError) with one message saying how to go on.
    """
    plan = Path(plan)
    if not plan.is_file():
        raise EngineError(f"engine not found: {plan}")
    from ..sidecar import plan_flavour, read_sidecar

    sidecar = read_sidecar(plan)
    flavour = plan_flavour(sidecar)
    _require_gpu(plan, sidecar, flavour)
    cudart = _cudart()
    trt = import_tensorrt(flavour, str(sidecar.get("tensorrt_version", "")))
    gpu_name, capability = _select_device(cudart, device_id)
    warnings: list[str] = []
    _check_plan_fits(plan, sidecar, trt, gpu_name, capability, warnings.append)
    version_compatible = bool(sidecar.get("version_compatible", False))
    if version_compatible and not trust_engine_code:
        raise EngineError(
            f"{plan.name} is a version-compatible plan, which runs host code stored in the file; "
            "load it only if you trust where it came from, with --trust-engine-code"
        )
    logger, runtime, engine = _deserialise(trt, plan, version_compatible)
    return LoadedEngine(
        plan=plan, sidecar=sidecar, flavour=flavour, trt=trt, logger=logger, runtime=runtime, engine=engine,
        gpu_name=gpu_name, compute_capability=capability, card=dict(sidecar.get("model_card") or {}),
        precision=str(sidecar.get("precision", "fp16")), size_limits=_check_io(trt, engine, plan), warnings=warnings,
    )


def _require_gpu(plan: Path, sidecar: dict[str, Any], flavour: str) -> None:
    """EngineError naming the CPU alternative when no CUDA device is usable (no TensorRT object is made)."""
    if gpu_count() > 0:
        return
    from ..sidecar import rtx_targets_text

    built = f"{flavour} {sidecar.get('tensorrt_version', '?')}"
    where = rtx_targets_text(sidecar) if flavour == "tensorrt_rtx" else f"{sidecar.get('gpu_name') or 'an NVIDIA GPU'}"
    onnx = str(sidecar.get("onnx_file") or "MODEL.colour.fp16.onnx").replace(".fp16.onnx", ".onnx")
    raise EngineError(
        f"{plan.name} is a {built} engine (for {where}); running it needs an NVIDIA GPU with its "
        "driver and cuda-python, and none is usable here (cudaGetDeviceCount failed or found 0 devices); "
        f"on this machine run the ONNX model on the CPU instead: rfrun -m {onnx} --backend ort"
    )


def _select_device(cudart: Any, device_id: int) -> tuple[str, tuple[int, int]]:
    """Make ``device_id`` current; its (name, (major, minor) compute capability)."""
    _check(cudart.cudaSetDevice(device_id), "cudaSetDevice")
    props = _check(cudart.cudaGetDeviceProperties(device_id), "cudaGetDeviceProperties")
    name = props.name
    gpu_name = (name.decode(errors="replace") if isinstance(name, bytes) else str(name)).rstrip("\0")
    return gpu_name, (int(props.major), int(props.minor))


def _check_plan_fits(plan: Path, sidecar: dict[str, Any], trt: Any, gpu_name: str, capability: tuple[int, int],
                     warn: Callable[[str], None]) -> None:
    """EngineError unless the side-car says a colour-graph plan built for this TensorRT and GPU."""
    from ..sidecar import check_sidecar

    if sidecar.get("graph", "colour") != "colour":
        raise EngineError(
            f"{plan.name} was built from the {sidecar.get('graph')!r} graph; rfrun runs engines "
            "built from the colour graph: rfexport engine MODEL.colour.fp16.onnx"
        )
    check_sidecar(
        sidecar,
        trt.__version__,
        gpu_name,
        capability,
        lean=trt.__name__.startswith("tensorrt_lean"),
        flavour="tensorrt_rtx" if trt.__name__.startswith("tensorrt_rtx") else "tensorrt",
        plan_path=plan,
        warn=warn,
    )


def _deserialise(trt: Any, plan: Path, version_compatible: bool) -> tuple[Any, Any, Any]:
    """(logger, runtime, engine) of ``plan``; EngineError when TensorRT cannot load it."""
    logger = trt.Logger(trt.Logger.WARNING)
    runtime = trt.Runtime(logger)
    if version_compatible:
        runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(plan.read_bytes())
    if engine is None:
        raise EngineError(
            f"TensorRT {trt.__version__} cannot load {plan.name} (built for another TensorRT "
            "version or GPU, or a lean runtime given a plan that is not version-compatible); rebuild it "
            "here: rfexport engine MODEL.fp16.onnx"
        )
    return logger, runtime, engine


def _check_io(trt: Any, engine: Any, plan: Path) -> tuple[Size, Size]:
    """EngineError unless the engine has the colour graph's tensors; its profile's (min, max) frame size."""
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    need = {INPUT_A, INPUT_B, INPUT_STATE, OUTPUT_FUSED, OUTPUT_STATE}
    if not need <= set(names):
        raise EngineError(
            f"{plan.name} is not a refusion colour-graph engine: tensors {names}, expected {sorted(need)}"
        )
    inputs = {n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT}
    if inputs != {INPUT_A, INPUT_B, INPUT_STATE}:
        raise EngineError(f"{plan.name}: engine inputs are {sorted(inputs)}, expected a, b, norm_state")
    mins, _opt, maxs = engine.get_tensor_profile_shape(INPUT_A, 0)
    return Size(int(mins[0]), int(mins[1])), Size(int(maxs[0]), int(maxs[1]))


# -- runner: an execution context, a stream and pinned buffers around a loaded engine ------------
class TensorRTBackend(Backend):
    """Runs a colour-graph plan (``*.plan`` with its ``*.plan.json`` side-car).

    :meth:`open` loads the plan with :func:`load_engine` (or takes a :class:`LoadedEngine`
    already loaded), then creates the execution context and the CUDA stream; :meth:`infer`
    only runs.
    """

    name = "tensorrt"

    def __init__(self, model: str | Path, trust_engine_code: bool = False, device_id: int = 0,
                 loaded: LoadedEngine | None = None) -> None:
        super().__init__(model)
        self.trust_engine_code = trust_engine_code
        self.device_id = device_id
        self.device = "cuda"
        self.loaded = loaded
        self.sidecar: dict[str, Any] = {}
        self.trt: Any = None
        self.cudart: Any = None
        self._engine = self._context = None
        self._stream = None
        self._buffers: dict[str, _Buffer] = {}
        self._shape: tuple[int, ...] | None = None
        self.gpu_name = ""
        self.flavour = "tensorrt"
        self._runtime_cache: Any = None
        self._runtime_config: Any = None

    def open(self) -> "TensorRTBackend":
        loaded = self.loaded or load_engine(self.model, self.trust_engine_code, self.device_id)
        self.loaded = loaded
        self.sidecar, self.flavour, self.trt, self.gpu_name = loaded.sidecar, loaded.flavour, loaded.trt, loaded.gpu_name
        self.card, self.precision, self.size_limits = loaded.card, loaded.precision, loaded.size_limits
        self.warnings.extend(loaded.warnings)
        self.cudart = _cudart()
        self._engine = loaded.engine
        if self.flavour == "tensorrt_rtx":
            self._context = self._engine.create_execution_context(self._rtx_runtime_config())
        else:
            self._context = self._engine.create_execution_context()
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
        self._context = self._engine = None
        self.loaded = None
        self._runtime_cache = self._runtime_config = None
        self._shape = None
        self._open = False
