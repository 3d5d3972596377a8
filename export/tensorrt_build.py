"""ONNX -> TensorRT plan through the Python API (pip wheels ship no trtexec), for three flavours.

Flavours (chosen by :func:`select_flavour`; ``--trt-flavour`` forces one):

- ``tensorrt`` 10.x / 11.x (module ``tensorrt``): builds on, and for, the GPU it runs on
  (optionally version- or hardware-compatible). Needs an NVIDIA GPU to build; a
  persistent timing cache speeds up rebuilds.
- ``tensorrt_rtx`` (module ``tensorrt_rtx``, ``pip install tensorrt-rtx-cu13``): builds
  ahead of time *without a GPU* for a list of target compute capabilities (default:
  what TensorRT-RTX targets by default, 8.0 / 8.6 / 8.9 / 12.0 and later); the kernels are
  compiled on the target at first run, and the runtime keeps them in a runtime cache
  (see runtime/backends/tensorrt.py). Engines run on RTX-class GPUs only.

Common to both:

- Strongly typed network: precision comes from the graph (the FP16 ONNX has explicit
  Casts and float32 islands). TensorRT 11 removed ``BuilderFlag.FP16``; on 10.x the
  ``STRONGLY_TYPED`` flag is required for this, on 11 and RTX it is accepted and a no-op.
  No precision flag is ever set.
- Before building, the parsed network is checked (export/trt_network.py): float32
  reductions over H*W, half convolutions in FP16 graphs, the graph's I/O types. A
  network that fails is not built.
- One optimisation profile from min/opt/max (H, W); build progress is reported phase by
  phase (a build can take minutes on large profiles).
- With full TensorRT the built engine is also inspected (engine inspector, JSON layer
  information) and an FP16 build whose layers came out FP32 is refused: on TensorRT 11
  an FP32 ONNX silently gives an FP32 engine. That needs a GPU, so it is skipped for
  tensorrt_rtx builds without one (the parsed-network check above still applies).
- The GPU is probed with ``cudaGetDeviceCount()`` (or torch.cuda) *before* any
  TensorRT runtime object is constructed: without a GPU TensorRT can segfault.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from refusion.runtime.card import read_onnx_metadata
from refusion.runtime.errors import EngineError, MissingDependencyError
from refusion.runtime.fsutil import atomic_write_bytes
from refusion.runtime.progress import Progress
from refusion.runtime.size import Size
from refusion.runtime.sidecar import (
    FLAVOURS,
    RTX_DEFAULT_TARGETS,
    cc_text,
    sha256_file,
    write_sidecar,
)

from .trt_network import check_network, network_report, parse_onnx


#: Every TensorRT name the builder itself uses (module attributes, classes, methods, enum
#: members); the parser and network-check names are ``trt_network.TRT_NETWORK_NAMES``.
#: tests/test_trt_names.py checks both lists against the real bindings of TensorRT 10.x and 11.x.
TRT_BUILD_NAMES: tuple[str, ...] = (
    "__version__",
    "Logger",
    "WARNING",
    "Builder",
    "STRONGLY_TYPED",
    "parse",
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
    "progress_monitor",
    "IProgressMonitor",
    "phase_start",
    "step_complete",
    "phase_finish",
)

#: Builder names used only with tensorrt_rtx (checked against the installed tensorrt_rtx module).
RTX_BUILD_NAMES: tuple[str, ...] = (
    "num_compute_capabilities",
    "set_compute_capability",
    "ComputeCapability",
)

#: ``--trt-flavour`` values.
FLAVOUR_CHOICES = ("auto", *FLAVOURS)

#: How to install each flavour (for messages and the README).
INSTALL_HINTS = {
    "tensorrt": "pip install tensorrt-cu13 --extra-index-url https://pypi.nvidia.com (needs an NVIDIA GPU to build)",
    "tensorrt_rtx": "pip install tensorrt-rtx-cu13==1.7.1.116 (builds without a GPU; engines run on RTX GPUs)",
}

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
    flavour: str = "auto"  # "auto" | "tensorrt" | "tensorrt_rtx" (see select_flavour)
    compute_capabilities: tuple[tuple[int, int], ...] = ()  # tensorrt_rtx targets; () = its defaults
    min_size: Size = Size(64, 64)  # the optimisation profile's smallest frame
    opt_size: Size = Size(480, 640)  # the size TensorRT tunes for
    max_size: Size = Size(1080, 1920)
    timing_cache: Path | None = None  # full TensorRT: default refusion-trt-<version>.cache beside the plan
    workspace_mib: int = 4096
    version_compatible: bool = False
    hardware_compatible: bool = False  # Ampere and later (compute capability >= 8.0)
    overwrite: bool = False
    allow_fp32_layers: float = 0.5  # an fp16 build may keep at most this fraction of layers in FP32

    def __post_init__(self) -> None:
        for name in ("min_size", "opt_size", "max_size"):
            object.__setattr__(self, name, Size(*getattr(self, name)))


@dataclass
class EngineResult:
    plan: Path
    sidecar: Path
    precision_summary: dict[str, int] = field(default_factory=dict)  # datatype -> layer count (inspector)
    tensorrt_version: str = ""
    gpu_name: str = ""
    flavour: str = "tensorrt"
    network: dict[str, Any] = field(default_factory=dict)  # NetworkReport.summary() of the parsed network
    build_seconds: float = 0.0


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
        if config.flavour != "auto":
            parts += ["--trt-flavour", config.flavour]
        for cc in config.compute_capabilities:
            parts += ["--compute-capability", cc_text(cc)]
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


@dataclass(frozen=True)
class Flavour:
    """An importable TensorRT flavour with a builder."""

    name: str  # "tensorrt" | "tensorrt_rtx"
    module: Any
    version: str

    @property
    def needs_gpu(self) -> bool:
        """Full TensorRT builds for the GPU it runs on; TensorRT-RTX builds ahead of time without one."""
        return self.name == "tensorrt"


def _import_builder_module(name: str) -> Any:
    """Import flavour ``name`` and check it has a Builder (the lean runtime has none)."""
    import importlib

    try:
        trt = importlib.import_module(name)
    except ImportError as exc:
        raise MissingDependencyError(f"{name} is not installed: {INSTALL_HINTS[name]}") from exc
    if not hasattr(trt, "Builder"):
        raise MissingDependencyError(
            f"the installed {name} module ({getattr(trt, '__file__', '?')}) has no Builder: it is a lean or "
            f"dispatch runtime; to build engines: {INSTALL_HINTS[name]}"
        )
    return trt


def _installed(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def select_flavour(requested: str = "auto", gpu: GpuInfo | None = None) -> Flavour:
    """The TensorRT flavour to build with.

    ``auto``: full ``tensorrt`` when it is installed and a GPU is usable (it builds for
    that GPU), else ``tensorrt_rtx`` when installed (no GPU needed), else full
    ``tensorrt`` (whose build then explains that it needs a GPU). A named flavour is
    used or refused with the command that installs it. Constructs nothing.
    """
    if requested not in FLAVOUR_CHOICES:
        raise EngineError(f"unknown TensorRT flavour {requested!r}; choose from {', '.join(FLAVOUR_CHOICES)}")
    if requested == "auto":
        have = [n for n in FLAVOURS if _installed(n)]
        if not have:
            raise MissingDependencyError(
                "no TensorRT builder is installed; either " + "; or ".join(f"{n}: {h}" for n, h in INSTALL_HINTS.items())
            )
        if "tensorrt" in have and "tensorrt_rtx" in have:
            gpu = gpu if gpu is not None else probe_gpu()
            requested = "tensorrt" if gpu.count else "tensorrt_rtx"
        else:
            requested = have[0]
    trt = _import_builder_module(requested)
    return Flavour(requested, trt, str(trt.__version__))


def _progress_monitor(trt: Any, say: Callable[[str], None]) -> Any:
    """An ``IProgressMonitor`` that reports the builder's top two phase levels with their times."""
    import time

    class Monitor(trt.IProgressMonitor):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.started: dict[str, float] = {}
            self.depth: dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            depth = 0 if parent_phase is None else self.depth.get(parent_phase, 0) + 1
            self.depth[phase_name] = depth
            self.started[phase_name] = time.perf_counter()
            if depth <= 1:
                say(f"{'  ' * (depth + 1)}{phase_name} ({num_steps} step{'s' if num_steps != 1 else ''})")

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True  # never cancel

        def phase_finish(self, phase_name: str) -> None:
            depth = self.depth.pop(phase_name, 0)
            took = time.perf_counter() - self.started.pop(phase_name, time.perf_counter())
            if depth == 0:
                say(f"  {phase_name} done in {took:.1f} s")

    return Monitor()


def _set_rtx_targets(trt: Any, bconf: Any, targets: Sequence[tuple[int, int]]) -> None:
    """Set tensorrt_rtx target compute capabilities (e.g. (8, 6) -> ComputeCapability.SM86)."""
    members = dict(trt.ComputeCapability.__members__)
    enums = []
    for cc in targets:
        key = f"SM{cc[0]}{cc[1]}"
        if key not in members:
            known = sorted(cc_text((int(k[2:-1]), int(k[-1]))) for k in members if k.startswith("SM"))
            raise EngineError(
                f"tensorrt_rtx {trt.__version__} cannot target compute capability {cc_text(cc)}; it knows {', '.join(known)}"
            )
        enums.append(members[key])
    bconf.num_compute_capabilities = len(enums)
    for i, value in enumerate(enums):
        if not bconf.set_compute_capability(value, i):
            raise EngineError(f"tensorrt_rtx refused target compute capability {cc_text(targets[i])}")


def check_writable(folder: Path) -> None:
    """Raise EngineError unless files can be created in ``folder`` (created if missing), before any work."""
    import tempfile

    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise EngineError(f"cannot write into {folder}: {probe} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise EngineError(
            f"cannot write into {folder} ({exc.strerror or exc}); choose a writable folder with --out"
        ) from None


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


def build_engine(config: EngineConfig, progress: Progress | None = None) -> EngineResult:
    """Build a plan + side-car from an rfexport ONNX file with the flavour of ``config.flavour``.

    Full TensorRT needs a GPU; tensorrt_rtx does not. Raises EngineError (no GPU for full
    TensorRT, a parsed network without its float32 islands or FP16 interior, parse/build
    failure, an FP16 engine that came out FP32, existing output without overwrite, an
    unwritable folder) or MissingDependencyError (no TensorRT flavour installed). What it
    does (phases and their seconds) goes to ``progress`` as messages.
    """
    import time

    say = (progress or Progress()).message
    onnx_path = Path(config.onnx)
    if not onnx_path.is_file():
        raise EngineError(f"ONNX file not found: {onnx_path}")
    _validate_sizes(config)
    graph, precision, card = _parse_onnx_io(onnx_path)
    plan = _free_plan_path(config)
    gpu = probe_gpu()
    flavour = select_flavour(config.flavour, gpu)
    _check_flavour_options(config, flavour, gpu, onnx_path)
    say(_target_text(config, flavour, gpu))
    trt = flavour.module
    logger = trt.Logger(trt.Logger.WARNING)
    builder, network, _parser = parse_onnx(trt, onnx_path, logger)
    netrep = network_report(network, trt)
    say(f"parsed {onnx_path.name}: {netrep.describe()}")
    problems = check_network(netrep, graph, precision)
    if problems:
        raise EngineError(f"{onnx_path.name} as parsed by {flavour.name} {flavour.version}: " + "; ".join(problems))
    bconf, cache_path, monitor = _builder_config(trt, builder, network, config, flavour, graph, plan, say)
    say(f"building {plan.name} from {onnx_path.name} ({graph}, {precision}); profile {config.min_size}..{config.max_size} (HxW)")
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, bconf)
    build_seconds = time.perf_counter() - t0
    del monitor
    if serialized is None:
        raise EngineError(f"{flavour.name} failed to build an engine from {onnx_path.name} (see the TensorRT log above)")
    plan_bytes = bytes(serialized)
    say(f"built in {build_seconds:.1f} s: {len(plan_bytes) / 1e6:.1f} MB")
    if gpu.count and flavour.name == "tensorrt":  # loading the plan back needs the GPU it was built for
        counts, io_types = _inspect_plan(trt, logger, plan_bytes, config, precision, say)
    else:
        counts, io_types = {}, dict(netrep.io_types)
    atomic_write_bytes(plan, plan_bytes)
    if cache_path is not None:
        timing = bconf.get_timing_cache()
        if timing is not None:
            atomic_write_bytes(cache_path, bytes(timing.serialize()))
    built = {"network": netrep.summary(), "layer_precisions": counts, "io_tensors": io_types,
             "build_seconds": round(build_seconds, 2), "rebuild_command": build_command(onnx_path.name, config)}
    side = write_sidecar(plan, _sidecar_data(config, card, graph, precision, flavour, gpu, plan, built))
    say(f"wrote {plan} and {side.name}")
    return EngineResult(
        plan=plan, sidecar=side, precision_summary=counts, tensorrt_version=flavour.version, gpu_name=gpu.name,
        flavour=flavour.name, network=netrep.summary(), build_seconds=build_seconds,
    )


def _free_plan_path(config: EngineConfig) -> Path:
    """The plan path of ``config``; EngineError when it (or its side-car) exists without overwrite, or is unwritable."""
    plan = plan_path_for(config)
    side = plan.with_name(plan.name + ".json")
    if not config.overwrite and (plan.exists() or side.exists()):
        raise EngineError(f"{plan} already exists; pass --overwrite to replace it")
    check_writable(plan.parent)
    return plan


def _check_flavour_options(config: EngineConfig, flavour: Flavour, gpu: GpuInfo, onnx_path: Path) -> None:
    """EngineError for a full-TensorRT build without a GPU, or options of the other flavour."""
    if flavour.needs_gpu and gpu.count == 0:
        hint = "" if _installed("tensorrt_rtx") else f", or build a TensorRT-RTX engine here ({INSTALL_HINTS['tensorrt_rtx']})"
        raise EngineError(
            f"building a full TensorRT engine needs an NVIDIA GPU, and none is usable here ({gpu.why_not}); "
            f"on the target machine run: {build_command(onnx_path, config)}{hint}"
        )
    if flavour.name == "tensorrt" and config.compute_capabilities:
        raise EngineError(
            "--compute-capability is for tensorrt_rtx builds; full TensorRT builds for the GPU it runs on "
            "(--hardware-compatible for any Ampere-or-later GPU)"
        )
    if flavour.name == "tensorrt_rtx" and (config.version_compatible or config.hardware_compatible):
        raise EngineError(
            "--version-compatible / --hardware-compatible are full-TensorRT options; a tensorrt_rtx engine "
            "targets compute capabilities instead (--compute-capability)"
        )


def _target_text(config: EngineConfig, flavour: Flavour, gpu: GpuInfo) -> str:
    """One line naming the builder and what it builds for."""
    if flavour.name == "tensorrt_rtx":
        chosen = ", ".join(cc_text(c) for c in config.compute_capabilities)
        targets = (f"compute capability {chosen}" if chosen else "its default compute capabilities "
                   + ", ".join(cc_text(c) for c in RTX_DEFAULT_TARGETS) + " and later")
        return f"tensorrt_rtx {flavour.version}, building ahead of time (no GPU needed) for {targets}"
    return f"TensorRT {flavour.version} on {gpu.name} (compute capability {cc_text(gpu.compute_capability)})"


def _builder_config(trt: Any, builder: Any, network: Any, config: EngineConfig, flavour: Flavour, graph: str,
                    plan: Path, say: Callable[[str], None]) -> tuple[Any, Path | None, Any]:
    """(builder config, timing-cache path or None, progress monitor): workspace, profile, flags, timing cache.

    The monitor is returned so the caller keeps it referenced until the build has finished.
    """
    bconf = builder.create_builder_config()
    bconf.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(config.workspace_mib) << 20)
    bconf.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer datatypes in the inspector
    bconf.progress_monitor = monitor = _progress_monitor(trt, say)
    names, shape_of = PROFILE_INPUTS[graph]
    profile = builder.create_optimization_profile()
    net_inputs = {network.get_input(i).name for i in range(network.num_inputs)}
    for name in names:
        if name not in net_inputs:
            raise EngineError(f"{Path(config.onnx).name} has no input {name!r} (inputs: {sorted(net_inputs)})")
        profile.set_shape(name, shape_of(*config.min_size), shape_of(*config.opt_size), shape_of(*config.max_size))
    bconf.add_optimization_profile(profile)
    cache_path = None
    if flavour.name == "tensorrt_rtx":
        if config.compute_capabilities:
            _set_rtx_targets(trt, bconf, config.compute_capabilities)
    else:
        if config.version_compatible:
            bconf.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
            bconf.set_flag(trt.BuilderFlag.EXCLUDE_LEAN_RUNTIME)
        if config.hardware_compatible:
            bconf.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
        cache_path = Path(config.timing_cache) if config.timing_cache else plan.with_name(f"refusion-trt-{flavour.version}.cache")
        cache_bytes = cache_path.read_bytes() if cache_path.is_file() else b""
        cache = bconf.create_timing_cache(cache_bytes)
        bconf.set_timing_cache(cache, ignore_mismatch=True)
    return bconf, cache_path, monitor


def _inspect_plan(trt: Any, logger: Any, plan_bytes: bytes, config: EngineConfig, precision: str,
                  say: Callable[[str], None]) -> tuple[dict[str, int], dict[str, str]]:
    """Load the plan back (needs the GPU it was built for): (layers by output type, I/O tensor types).

    EngineError when it cannot be loaded, or an FP16 build came out mostly FP32.
    """
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
    return counts, io_types


def _sidecar_data(config: EngineConfig, card: dict[str, Any], graph: str, precision: str, flavour: Flavour,
                  gpu: GpuInfo, plan: Path, built: dict[str, Any]) -> dict[str, Any]:
    """The side-car of a written plan: its source, target, build options and ``built`` (network, layer
    precisions, I/O types, seconds, rebuild command)."""
    onnx_path = Path(config.onnx)
    sidecar: dict[str, Any] = {
        "model_card": card,
        "graph": graph,
        "precision": precision,
        "flavour": flavour.name,
        "tensorrt_version": flavour.version,
        "profile": {"min": list(config.min_size), "opt": list(config.opt_size), "max": list(config.max_size)},
        "onnx_file": onnx_path.name,
        "onnx_sha256": sha256_file(onnx_path),
        "plan_sha256": sha256_file(plan),
        "version_compatible": bool(config.version_compatible),
        "hardware_compatibility": "ampere_plus" if config.hardware_compatible else "none",
        **built,
    }
    if flavour.name == "tensorrt_rtx":
        sidecar["compute_capabilities"] = [cc_text(c) for c in config.compute_capabilities] or "default"
        sidecar["gpu_name"] = ""  # built ahead of time, on no GPU
        sidecar["compute_capability"] = []
    else:
        sidecar["gpu_name"] = gpu.name
        sidecar["compute_capability"] = list(gpu.compute_capability)
    return sidecar


def engine_hint(onnx_files: Sequence[Path], config: EngineConfig | None = None) -> str:
    """What to run on the target when this machine cannot build engines."""
    cmds = [build_command(p.name, config) for p in onnx_files]
    return "build the TensorRT engine(s) on the target GPU machine with: " + " ; ".join(cmds)
