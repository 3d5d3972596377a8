"""ONNX -> TensorRT plan through the Python API (pip wheels ship no trtexec), TensorRT 10.x and 11.x.

- Strongly typed network: precision comes from the graph (the FP16 ONNX has explicit
  Casts and float32 islands). TensorRT 11 removed ``BuilderFlag.FP16``; on 10.x the
  ``STRONGLY_TYPED`` flag is required for this, on 11 it is accepted and a no-op.
  No precision flag is ever set.
- One optimisation profile from min/opt/max (H, W); a persistent timing cache.
- Optional ``version_compatible`` (runs on later TensorRT of the same major version and
  on the lean runtime; the lean runtime is excluded from the plan) and
  ``hardware_compatible`` (Ampere and later).
- After the build the engine is inspected (engine inspector, JSON layer information)
  and an FP16 build whose layers came out FP32 is refused: on TensorRT 11 an FP32
  ONNX silently gives an FP32 engine.
- The GPU is probed with ``cudaGetDeviceCount()`` (or torch.cuda) *before* any
  TensorRT object is constructed: without a GPU TensorRT can segfault.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from refusion.runtime.card import read_onnx_metadata
from refusion.runtime.errors import EngineError, MissingDependencyError
from refusion.runtime.sidecar import sha256_file, write_sidecar

Reporter = Callable[[str], None]

#: Every TensorRT name the builder uses (module attributes, classes, methods, enum
#: members), in one place: tests/test_trt_names.py checks them against the real
#: bindings of TensorRT 10.x and 11.x.
TRT_BUILD_NAMES: tuple[str, ...] = (
    "__version__",
    "Logger",
    "WARNING",
    "Builder",
    "create_network",
    "NetworkDefinitionCreationFlag",
    "STRONGLY_TYPED",
    "OnnxParser",
    "parse",
    "num_errors",
    "get_error",
    "num_inputs",
    "get_input",
    "name",
    "create_builder_config",
    "set_memory_pool_limit",
    "MemoryPoolType",
    "WORKSPACE",
    "create_optimization_profile",
    "set_shape",
    "add_optimization_profile",
    "create_timing_cache",
    "set_timing_cache",
    "ignore_mismatch",
    "get_timing_cache",
    "serialize",
    "set_flag",
    "BuilderFlag",
    "VERSION_COMPATIBLE",
    "EXCLUDE_LEAN_RUNTIME",
    "hardware_compatibility_level",
    "HardwareCompatibilityLevel",
    "AMPERE_PLUS",
    "profiling_verbosity",
    "ProfilingVerbosity",
    "DETAILED",
    "build_serialized_network",
    "Runtime",
    "engine_host_code_allowed",
    "deserialize_cuda_engine",
    "create_engine_inspector",
    "get_engine_information",
    "LayerInformationFormat",
    "JSON",
    "num_io_tensors",
    "get_tensor_name",
    "get_tensor_dtype",
    "DataType",
    "HALF",
)

#: Inputs with dynamic H, W per graph, and how (H, W) becomes their shape.
PROFILE_INPUTS: dict[str, tuple[tuple[str, ...], Callable[[int, int], tuple[int, ...]]]] = {
    "core": (("a", "b"), lambda h, w: (1, 1, h, w)),
    "colour": (("a", "b"), lambda h, w: (h, w, 3)),
}


@dataclass(frozen=True)
class EngineConfig:
    """What ``rfexport engine MODEL.onnx`` builds."""

    onnx: Path
    out: Path | None = None  # plan path or folder; default: <onnx stem>.plan beside the ONNX
    min_size: tuple[int, int] = (64, 64)  # (H, W)
    opt_size: tuple[int, int] = (480, 640)
    max_size: tuple[int, int] = (1080, 1920)
    timing_cache: Path | None = None  # default: refusion-trt-<version>.cache beside the plan
    workspace_mib: int = 4096
    version_compatible: bool = False
    hardware_compatible: bool = False  # Ampere and later (compute capability >= 8.0)
    overwrite: bool = False
    allow_fp32_layers: float = 0.5  # an fp16 build may keep at most this fraction of layers in FP32


@dataclass
class EngineResult:
    plan: Path
    sidecar: Path
    precision_summary: dict[str, int] = field(default_factory=dict)  # datatype -> layer count
    tensorrt_version: str = ""
    gpu_name: str = ""


def plan_path_for(config: EngineConfig) -> Path:
    onnx = Path(config.onnx)
    stem = onnx.name[: -len(".onnx")] if onnx.name.endswith(".onnx") else onnx.stem
    if config.out is None:
        return onnx.with_name(stem + ".plan")
    out = Path(config.out)
    if out.suffix == ".plan":
        return out
    return out / (stem + ".plan")


def build_command(onnx: Path | str, config: EngineConfig | None = None) -> str:
    """The command line that builds the engine for ``onnx`` on a target machine."""
    parts = ["rfexport", "engine", str(onnx)]
    if config is not None:
        fmt = lambda s: f"{s[0]}x{s[1]}"  # noqa: E731
        parts += ["--min-size", fmt(config.min_size), "--opt-size", fmt(config.opt_size), "--max-size", fmt(config.max_size)]
        if config.version_compatible:
            parts.append("--version-compatible")
        if config.hardware_compatible:
            parts.append("--hardware-compatible")
    return " ".join(parts)


@dataclass(frozen=True)
class GpuInfo:
    count: int
    name: str = ""
    compute_capability: tuple[int, int] = (0, 0)
    why_not: str = ""  # filled when count == 0


def probe_gpu(device: int = 0) -> GpuInfo:
    """Find a usable CUDA GPU without touching TensorRT (cuda.bindings first, then torch.cuda)."""
    reasons = []
    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]

        err, count = cudart.cudaGetDeviceCount()
        if int(err) == 0 and count:
            err, props = cudart.cudaGetDeviceProperties(device)
            if int(err) == 0:
                name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
                return GpuInfo(int(count), name.rstrip("\0"), (int(props.major), int(props.minor)))
        reasons.append(f"cudaGetDeviceCount: {err!r}")
    except ImportError:
        reasons.append("cuda-python not installed")
    except Exception as exc:  # broken driver installs raise all sorts of things
        reasons.append(f"cuda-python: {exc}")
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() > device:
            cc = torch.cuda.get_device_capability(device)
            return GpuInfo(torch.cuda.device_count(), torch.cuda.get_device_name(device), (int(cc[0]), int(cc[1])))
        reasons.append("torch.cuda: no device")
    except ImportError:
        pass
    return GpuInfo(0, why_not="; ".join(reasons) or "no CUDA GPU found")


def import_tensorrt_builder() -> Any:
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except ImportError as exc:
        raise MissingDependencyError(
            "TensorRT (the full package, with the builder) is not installed: pip install 'refusion[trt]' "
            "(tensorrt-cu13 comes from NVIDIA's package index: pip install --extra-index-url "
            "https://pypi.nvidia.com tensorrt-cu13)"
        ) from exc
    if not hasattr(trt, "Builder"):
        raise MissingDependencyError(
            f"the installed tensorrt module ({getattr(trt, '__file__', '?')}) has no Builder: it is a lean or "
            "dispatch runtime; install the full tensorrt package to build engines"
        )
    return trt


def _parse_onnx_io(onnx_path: Path) -> tuple[str, str, dict]:
    """(graph kind, precision, model card dict) from the ONNX metadata (onnx, else onnxruntime)."""
    if not onnx_path.is_file():
        raise EngineError(f"ONNX model not found: {onnx_path}")
    try:
        import onnx

        model = onnx.load(str(onnx_path), load_external_data=False)
        meta_map = {p.key: p.value for p in model.metadata_props}
    except ImportError:
        from refusion.runtime._deps import require

        ort = require("onnxruntime", "reading the ONNX model card")
        try:
            sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises untyped errors for bad files
            raise EngineError(f"{onnx_path} is not a readable ONNX model ({str(exc).splitlines()[0]})") from None
        meta_map = sess.get_modelmeta().custom_metadata_map
    except Exception as exc:  # protobuf's DecodeError and friends: not an ONNX file
        raise EngineError(
            f"{onnx_path} is not a readable ONNX model ({type(exc).__name__}); give an rfexport .onnx file"
        ) from None
    meta = read_onnx_metadata(meta_map, onnx_path.name)
    return meta.graph, meta.precision, meta.card.to_dict()


def _validate_sizes(config: EngineConfig) -> None:
    mn, op, mx = config.min_size, config.opt_size, config.max_size
    for s in (mn, op, mx):
        if len(s) != 2 or min(s) < 16:
            raise EngineError(f"profile size {s} must be (H, W) with H, W >= 16")
    if not (mn[0] <= op[0] <= mx[0] and mn[1] <= op[1] <= mx[1]):
        raise EngineError(f"profile sizes must satisfy min <= opt <= max per dimension: {mn} {op} {mx}")


_HALF = re.compile(r"\b(half|fp16|float16)\b", re.IGNORECASE)
_FLOAT = re.compile(r"\b(float|fp32|float32)\b", re.IGNORECASE)


def summarise_layer_precisions(info: Any) -> dict[str, int]:
    """Count layers by output datatype in the engine inspector's JSON (``get_engine_information``).

    Returns e.g. {"fp16": 120, "fp32": 9, "other": 4, "unknown": 0}. The JSON format differs
    between versions: outputs are dicts with a "Format/Datatype" string in DETAILED mode.
    """
    if isinstance(info, str):
        info = json.loads(info)
    layers = info.get("Layers", []) if isinstance(info, dict) else []
    counts = {"fp16": 0, "fp32": 0, "other": 0, "unknown": 0}
    for layer in layers:
        if not isinstance(layer, dict):
            counts["unknown"] += 1
            continue
        outputs = layer.get("Outputs") or []
        text = " ".join(
            str(o.get("Format/Datatype", "")) if isinstance(o, dict) else str(o) for o in outputs
        )
        if not text.strip():
            counts["unknown"] += 1
        elif _HALF.search(text):
            counts["fp16"] += 1
        elif _FLOAT.search(text):
            counts["fp32"] += 1
        else:
            counts["other"] += 1
    return counts


def check_precision(counts: dict[str, int], precision: str, allow_fp32: float) -> None:
    """Refuse an FP16 build that came out FP32 (no or too few half layers)."""
    if precision != "fp16":
        return
    total = counts["fp16"] + counts["fp32"]
    if total == 0:
        raise EngineError(f"engine inspection found no layer datatypes ({counts}); cannot verify FP16")
    if counts["fp16"] == 0 or counts["fp32"] / total > allow_fp32:
        raise EngineError(
            f"the FP16 engine came out {counts['fp32']} FP32 vs {counts['fp16']} FP16 layers: TensorRT did not "
            "honour the graph's float16 types (was it built from an FP32 ONNX?); use MODEL.fp16.onnx"
        )


def build_engine(config: EngineConfig, report: Reporter | None = None) -> EngineResult:
    """Build a plan + side-car from an rfexport ONNX file. Needs a GPU and the full TensorRT.

    Raises EngineError (no GPU, parse/build failure, FP16 that came out FP32, existing
    output without overwrite) or MissingDependencyError (no TensorRT).
    """
    say = report or (lambda _m: None)
    onnx_path = Path(config.onnx)
    if not onnx_path.is_file():
        raise EngineError(f"ONNX file not found: {onnx_path}")
    _validate_sizes(config)
    graph, precision, card = _parse_onnx_io(onnx_path)
    plan = plan_path_for(config)
    side = plan.with_name(plan.name + ".json")
    if not config.overwrite and (plan.exists() or side.exists()):
        raise EngineError(f"{plan} already exists; pass --overwrite to replace it")
    gpu = probe_gpu()
    if gpu.count == 0:
        raise EngineError(
            f"building a TensorRT engine needs an NVIDIA GPU, and none is usable here ({gpu.why_not}); "
            f"on the target machine run: {build_command(onnx_path, config)}"
        )
    trt = import_tensorrt_builder()
    say(f"TensorRT {trt.__version__} on {gpu.name} (compute capability {gpu.compute_capability[0]}.{gpu.compute_capability[1]})")

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineError(f"TensorRT cannot parse {onnx_path.name}: " + "; ".join(errors[:5]))
    bconf = builder.create_builder_config()
    bconf.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(config.workspace_mib) << 20)
    bconf.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer datatypes in the inspector
    names, shape_of = PROFILE_INPUTS[graph]
    profile = builder.create_optimization_profile()
    net_inputs = {network.get_input(i).name for i in range(network.num_inputs)}
    for name in names:
        if name not in net_inputs:
            raise EngineError(f"{onnx_path.name} has no input {name!r} (inputs: {sorted(net_inputs)})")
        profile.set_shape(name, shape_of(*config.min_size), shape_of(*config.opt_size), shape_of(*config.max_size))
    bconf.add_optimization_profile(profile)
    if config.version_compatible:
        bconf.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        bconf.set_flag(trt.BuilderFlag.EXCLUDE_LEAN_RUNTIME)
    if config.hardware_compatible:
        bconf.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    cache_path = Path(config.timing_cache) if config.timing_cache else plan.with_name(f"refusion-trt-{trt.__version__}.cache")
    cache_bytes = cache_path.read_bytes() if cache_path.is_file() else b""
    cache = bconf.create_timing_cache(cache_bytes)
    bconf.set_timing_cache(cache, ignore_mismatch=True)
    say(f"building {plan.name} from {onnx_path.name} ({graph}, {precision}); profile {config.min_size}..{config.max_size}")
    serialized = builder.build_serialized_network(network, bconf)
    if serialized is None:
        raise EngineError(f"TensorRT failed to build an engine from {onnx_path.name} (see the TensorRT log above)")
    plan_bytes = bytes(serialized)

    runtime = trt.Runtime(logger)
    if config.version_compatible:
        runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(plan_bytes)
    if engine is None:
        raise EngineError("TensorRT built a plan it cannot load back")
    inspector = engine.create_engine_inspector()
    info = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    counts = summarise_layer_precisions(info)
    say(f"engine layers by output type: {counts}")
    check_precision(counts, precision, config.allow_fp32_layers)
    io_types = {
        engine.get_tensor_name(i): str(engine.get_tensor_dtype(engine.get_tensor_name(i)))
        for i in range(engine.num_io_tensors)
    }

    plan.parent.mkdir(parents=True, exist_ok=True)
    tmp = plan.with_name(f".{plan.name}.tmp")
    tmp.write_bytes(plan_bytes)
    os.replace(tmp, plan)
    timing = bconf.get_timing_cache()
    if timing is not None:
        cache_tmp = cache_path.with_name(f".{cache_path.name}.tmp")
        cache_tmp.write_bytes(bytes(timing.serialize()))
        os.replace(cache_tmp, cache_path)
    sidecar = {
        "model_card": card,
        "graph": graph,
        "precision": precision,
        "tensorrt_version": str(trt.__version__),
        "gpu_name": gpu.name,
        "compute_capability": list(gpu.compute_capability),
        "profile": {"min": list(config.min_size), "opt": list(config.opt_size), "max": list(config.max_size)},
        "onnx_file": onnx_path.name,
        "onnx_sha256": sha256_file(onnx_path),
        "plan_sha256": sha256_file(plan),
        "version_compatible": bool(config.version_compatible),
        "hardware_compatibility": "ampere_plus" if config.hardware_compatible else "none",
        "layer_precisions": counts,
        "io_tensors": io_types,
        "rebuild_command": build_command(onnx_path.name, config),
    }
    side = write_sidecar(plan, sidecar)
    say(f"wrote {plan} and {side.name}")
    return EngineResult(plan=plan, sidecar=side, precision_summary=counts, tensorrt_version=str(trt.__version__), gpu_name=gpu.name)


def engine_hint(onnx_files: Sequence[Path], config: EngineConfig | None = None) -> str:
    """What to run on the target when this machine cannot build engines."""
    cmds = [build_command(p.name, config) for p in onnx_files]
    return "build the TensorRT engine(s) on the target GPU machine with: " + " ; ".join(cmds)
