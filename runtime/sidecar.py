"""The ``<name>.plan.json`` side-car of a TensorRT plan, and the check that a plan fits this machine.

A TensorRT plan only deserialises on the TensorRT version and the GPU (compute
capability) it was built for, unless it was built version-compatible and/or
hardware-compatible. Failing that, TensorRT says little more than "Version tag does
not match" or segfaults, so the runtime checks the side-car first and says how to
rebuild. No torch and no tensorrt import here.

Side-car keys (all written by ``refusion.export.tensorrt_build``)::

    format, format_version     "refusion-plan-sidecar", 2 (1: no "flavour", always full TensorRT)
    model_card                 the ModelCard as a JSON object (runtime/card.py)
    graph                      "core" | "colour"
    precision                  "fp32" | "fp16" (the graph's; checked on the parsed network and, with a GPU, the engine)
    flavour                    "tensorrt" (10.x/11.x) | "tensorrt_rtx"
    tensorrt_version           version of that flavour, e.g. "10.13.3.9" or "1.7.1.116"
    gpu_name                   e.g. "NVIDIA H100 80GB HBM3" ("" for tensorrt_rtx: built without a GPU)
    compute_capability         [major, minor] of that GPU ([] for tensorrt_rtx)
    compute_capabilities       tensorrt_rtx only: target list, e.g. ["8.6", "8.9"], or "default"
    network                    layer counts of the parsed network (export/trt_network.py)
    profile                    {"min": [H, W], "opt": [H, W], "max": [H, W]}
    onnx_file, onnx_sha256     the ONNX the plan was built from
    plan_sha256                sha256 of the .plan bytes
    version_compatible         bool (BuilderFlag.VERSION_COMPATIBLE; the lean runtime needs it)
    hardware_compatibility     "none" | "ampere_plus" | "same_compute_capability"
    rebuild_command            the rfexport command that rebuilds the plan on a target
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import EngineError
from .fsutil import atomic_write_text

FORMAT_TAG = "refusion-plan-sidecar"
FORMAT_VERSION = 2
#: TensorRT flavours a plan can come from (the module names).
FLAVOURS = ("tensorrt", "tensorrt_rtx")
#: Compute capabilities a tensorrt_rtx engine built with the default targets runs on ("and later" beyond the last).
RTX_DEFAULT_TARGETS: tuple[tuple[int, int], ...] = ((8, 0), (8, 6), (8, 9), (12, 0))
HARDWARE_LEVELS = ("none", "ampere_plus", "same_compute_capability")
REQUIRED_KEYS = (
    "model_card",
    "graph",
    "precision",
    "tensorrt_version",
    "gpu_name",
    "compute_capability",
    "profile",
    "onnx_sha256",
    "version_compatible",
)


def sidecar_path(plan_path: str | os.PathLike) -> Path:
    """``engine.plan`` -> ``engine.plan.json``."""
    p = Path(plan_path)
    return p.with_name(p.name + ".json")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def rebuild_command(sidecar: Mapping[str, Any], plan_path: str | os.PathLike | None = None) -> str:
    """The command that rebuilds this plan on the machine that runs it."""
    cmd = sidecar.get("rebuild_command")
    if isinstance(cmd, str) and cmd:
        return cmd
    onnx = sidecar.get("onnx_file") or "MODEL.fp16.onnx"
    out = f" --out {Path(plan_path).parent}" if plan_path else ""
    return f"rfexport engine {onnx}{out}"


def write_sidecar(plan_path: str | os.PathLike, sidecar: Mapping[str, Any]) -> Path:
    """Write the side-car atomically beside ``plan_path``; returns its path."""
    target = sidecar_path(plan_path)
    data = {"format": FORMAT_TAG, "format_version": FORMAT_VERSION, **sidecar}
    return atomic_write_text(target, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_sidecar(plan_path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``<plan>.json``; EngineError when missing or malformed."""
    plan = Path(plan_path)
    path = sidecar_path(plan)
    how = f"rebuild the engine with: rfexport engine MODEL.fp16.onnx --out {plan.parent}"
    if not path.is_file():
        raise EngineError(f"{plan} has no side-car {path.name}: cannot tell which TensorRT/GPU built it; {how}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EngineError(f"side-car {path} is unreadable ({exc}); {how}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT_TAG:
        raise EngineError(f"{path} is not a refusion plan side-car; {how}")
    if int(data.get("format_version", 0)) > FORMAT_VERSION:
        raise EngineError(f"{path} has side-car version {data['format_version']}; this refusion reads up to {FORMAT_VERSION}")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise EngineError(f"side-car {path} lacks {', '.join(missing)}; {how}")
    return data


def _parse_version(v: str) -> tuple[int, ...]:
    parts = []
    for token in str(v).split("."):
        digits = "".join(ch for ch in token if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    if not parts:
        raise EngineError(f"cannot parse TensorRT version {v!r}")
    return tuple(parts)


def check_sidecar(
    sidecar: Mapping[str, Any],
    trt_version: str,
    gpu_name: str,
    compute_capability: tuple[int, int],
    *,
    lean: bool = False,
    flavour: str = "tensorrt",
    plan_path: str | os.PathLike | None = None,
    warn: Callable[[str], None] | None = None,
) -> None:
    """Raise EngineError when the plan described by ``sidecar`` cannot run here.

    ``flavour`` is the TensorRT flavour that will load the plan ("tensorrt" also for the
    lean runtime). Rules (TensorRT's own compatibility rules):
    - Flavour: a tensorrt_rtx plan loads only in tensorrt_rtx, a full-TensorRT plan only in
      tensorrt (or tensorrt_lean); tensorrt_rtx plans need the exact version that built them
      and a GPU among their target compute capabilities.
    - TensorRT version: equal, or (version-compatible plan) same major and installed >= built.
    - GPU: same compute capability; a different one only for a hardware-compatible plan
      ("ampere_plus": any GPU with compute capability >= 8.0). The same compute capability
      under another GPU name passes with a warning (TensorRT tolerates it, tactics may be slower).
    - ``lean``: the lean runtime (tensorrt_lean) runs version-compatible plans only.
    Every message ends with the command that rebuilds the plan on this machine.
    """
    how = f"rebuild it on this machine with: {rebuild_command(sidecar, plan_path)}"
    name = Path(plan_path).name if plan_path else "the engine"
    built_v = str(sidecar.get("tensorrt_version", ""))
    built_flavour = plan_flavour(sidecar)
    if built_flavour != flavour:
        raise EngineError(
            f"{name} was built with {built_flavour} {built_v}, but this runtime uses {flavour} {trt_version}: "
            f"plans of one TensorRT flavour do not load in another; {how}"
        )
    if built_flavour == "tensorrt_rtx":
        _check_rtx(sidecar, name, trt_version, gpu_name, compute_capability, how)
        return
    _check_trt_version(sidecar, name, trt_version, lean, how)
    _check_gpu(sidecar, name, gpu_name, compute_capability, how, warn)


def _check_rtx(sidecar: Mapping[str, Any], name: str, trt_version: str, gpu_name: str,
               compute_capability: tuple[int, int], how: str) -> None:
    """A tensorrt_rtx plan: the exact version that built it, and a GPU among its targets."""
    built_v = str(sidecar.get("tensorrt_version", ""))
    if built_v != str(trt_version):
        raise EngineError(
            f"{name} was built with tensorrt_rtx {built_v} but tensorrt_rtx {trt_version} is installed; "
            f"install tensorrt-rtx-cu13=={built_v}, or {how}"
        )
    if not rtx_runs_on(sidecar, compute_capability):
        raise EngineError(
            f"{name} is a tensorrt_rtx engine for {rtx_targets_text(sidecar)}, but this GPU ({gpu_name}) "
            f"has compute capability {_cc(tuple(compute_capability))}; {how} --compute-capability "
            f"{_cc(tuple(compute_capability))} (TensorRT-RTX targets RTX GPUs; data-centre GPUs need full TensorRT)"
        )


def _check_trt_version(sidecar: Mapping[str, Any], name: str, trt_version: str, lean: bool, how: str) -> None:
    """A full-TensorRT plan: the version that built it, or a later one of the same major if version-compatible."""
    built_v = str(sidecar.get("tensorrt_version", ""))
    vc = bool(sidecar.get("version_compatible", False))
    if lean and not vc:
        raise EngineError(
            f"{name} was not built version-compatible, so the lean TensorRT runtime cannot load it; "
            f"install the full tensorrt package, or {how} --version-compatible"
        )
    if built_v != str(trt_version):
        b, i = _parse_version(built_v), _parse_version(trt_version)
        if not vc:
            raise EngineError(
                f"{name} was built with TensorRT {built_v} but TensorRT {trt_version} is installed "
                f"(plans only load on the version that built them unless built with --version-compatible); {how}"
            )
        if b[0] != i[0] or i < b:
            raise EngineError(
                f"{name} is version-compatible within TensorRT {b[0]}.x from {built_v} on, but TensorRT "
                f"{trt_version} is installed; {how}"
            )


def _check_gpu(sidecar: Mapping[str, Any], name: str, gpu_name: str, compute_capability: tuple[int, int], how: str,
               warn: Callable[[str], None] | None) -> None:
    """A full-TensorRT plan: the compute capability it was built for (any >= 8.0 when hardware-compatible)."""
    cc_built = tuple(int(x) for x in sidecar.get("compute_capability", ()))
    cc_here = tuple(int(x) for x in compute_capability)
    hw = str(sidecar.get("hardware_compatibility", "none"))
    gpu_built = str(sidecar.get("gpu_name", ""))
    if hw == "ampere_plus":
        if cc_here < (8, 0):
            raise EngineError(
                f"{name} was built hardware-compatible for Ampere and later (compute capability >= 8.0), "
                f"but this GPU ({gpu_name}) has {_cc(cc_here)}; {how}"
            )
    elif cc_here != cc_built:
        raise EngineError(
            f"{name} was built for {gpu_built or 'another GPU'} (compute capability {_cc(cc_built)}), "
            f"but this GPU is {gpu_name} ({_cc(cc_here)}); {how}"
        )
    elif gpu_name != gpu_built and warn is not None:
        warn(f"{name} was built on {gpu_built}, running on {gpu_name} (same compute capability {_cc(cc_here)})")


def _cc(cc: tuple[int, ...]) -> str:
    return ".".join(str(x) for x in cc) if cc else "unknown"


def cc_text(cc: tuple[int, ...] | list[int]) -> str:
    """(8, 6) -> "8.6"."""
    return _cc(tuple(cc))


def parse_cc(text: str) -> tuple[int, int]:
    """"8.6" (or "86", "sm86", "SM_86") -> (8, 6); EngineError when malformed."""
    t = str(text).strip().lower().replace("sm", "").replace("_", "")
    try:
        if "." in t:
            major, minor = (int(x) for x in t.split("."))
        else:
            major, minor = int(t[:-1]), int(t[-1])
    except ValueError:
        raise EngineError(f"{text!r} is not a compute capability like 8.6") from None
    return (major, minor)


def plan_flavour(sidecar: Mapping[str, Any]) -> str:
    """The TensorRT flavour that built the plan ("tensorrt" for format-1 side-cars)."""
    return str(sidecar.get("flavour") or "tensorrt")


def rtx_targets_text(sidecar: Mapping[str, Any]) -> str:
    """The GPUs a tensorrt_rtx plan targets, for messages."""
    targets = sidecar.get("compute_capabilities", "default")
    if targets == "default" or not targets:
        return "compute capability " + ", ".join(_cc(c) for c in RTX_DEFAULT_TARGETS) + " and later"
    return "compute capability " + ", ".join(str(t) for t in targets)


def rtx_runs_on(sidecar: Mapping[str, Any], compute_capability: tuple[int, int]) -> bool:
    """Whether a tensorrt_rtx plan's targets include a GPU of ``compute_capability``."""
    cc = tuple(int(x) for x in compute_capability)
    targets = sidecar.get("compute_capabilities", "default")
    if targets == "default" or not targets:
        return cc in RTX_DEFAULT_TARGETS or cc >= RTX_DEFAULT_TARGETS[-1]
    return cc in {parse_cc(t) for t in targets}
