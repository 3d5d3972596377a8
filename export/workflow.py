"""``rfexport MODEL``: ONNX files, then the TensorRT engine where this machine can build it, then Triton.

This machine can build when tensorrt_rtx is installed (no GPU needed) or full
TensorRT and a GPU are. Otherwise the ONNX files are still written, and the report
says which command builds the engine on the target.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from refusion.runtime.errors import EngineError, MissingDependencyError
from refusion.runtime.progress import Progress

from .onnx_export import ExportConfig, ExportResult, export_model
from .tensorrt_build import EngineConfig, EngineResult, build_command, build_engine, probe_gpu, select_flavour



@dataclass(frozen=True)
class WorkflowConfig:
    export: ExportConfig
    engine: bool | None = None  # None: build when a GPU and TensorRT are present; True: must build
    engine_template: EngineConfig = EngineConfig(onnx=Path("."))  # sizes/flags; onnx and out are filled in
    triton_repo: Path | None = None


@dataclass
class WorkflowResult:
    onnx: ExportResult
    engine: EngineResult | None = None
    engine_hint: str = ""  # the command to run on the target when no engine was built
    triton: list[Path] = field(default_factory=list)


def why_no_engine_here(flavour: str = "auto") -> str:
    """'' when this machine can build an engine with ``flavour``, else why not. Constructs nothing."""
    gpu = probe_gpu()
    try:
        chosen = select_flavour(flavour, gpu)
    except (MissingDependencyError, EngineError) as exc:
        return str(exc)
    if chosen.needs_gpu and gpu.count == 0:
        return f"full TensorRT needs an NVIDIA GPU to build, and none is usable here ({gpu.why_not})"
    return ""


def run_export(config: WorkflowConfig, progress: Progress | None = None) -> WorkflowResult:
    """Export, check, and build the engine when this machine can; messages go to ``progress``."""
    progress = progress or Progress()
    say = progress.message
    onnx = export_model(config.export, progress)
    for path in onnx.files.values():
        say(f"wrote {path}")
    result = WorkflowResult(onnx=onnx)
    precision = "fp16" if config.export.fp16 else "fp32"
    target = onnx.files.get(f"colour.{precision}") or onnx.files.get(f"core.{precision}")
    if target is not None and config.engine is not False:
        ecfg = replace(config.engine_template, onnx=target, out=target.parent, overwrite=config.export.overwrite)
        why = why_no_engine_here(ecfg.flavour)
        if why:
            result.engine_hint = build_command(target, ecfg)
            if config.engine:
                raise EngineError(f"cannot build the TensorRT engine here: {why}; on the target run: {result.engine_hint}")
            say(f"no TensorRT engine built here ({why}); on the target machine run: {result.engine_hint}")
        else:
            result.engine = build_engine(ecfg, progress)
    if config.triton_repo is not None:
        from .triton import write_triton_repo

        card_json = onnx.card.to_json() if onnx.card else ""
        if result.engine is not None:
            graph = "colour" if ".colour." in result.engine.plan.name else "core"
            result.triton.append(
                write_triton_repo(config.triton_repo, result.engine.plan, graph, card_json, overwrite=config.export.overwrite)
            )
        if target is not None:
            graph = "colour" if ".colour." in target.name else "core"
            result.triton.append(write_triton_repo(config.triton_repo, target, graph, card_json, overwrite=config.export.overwrite))
        for folder in result.triton:
            say(f"Triton model: {folder}")
    return result
