"""What ``rfbench latency`` measures: backends, graphs, sizes, the run's config and one result row.

Shared by the orchestrator (:mod:`.latency`), the rows of each backend family
(:mod:`.latency_torch`, :mod:`.latency_ort`, :mod:`.latency_trt`) and the report (:mod:`.latency_report`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from refusion.runtime.size import Size

SIZES: tuple[Size, ...] = (Size(256, 256), Size(480, 640), Size(720, 1280), Size(1080, 1920))
GRAPHS: tuple[str, ...] = ("core", "colour")
#: Backend name -> (device, precision).
BACKENDS: dict[str, tuple[str, str]] = {
    "torch-cpu": ("cpu", "fp32"),
    "ort-cpu-default": ("cpu", "fp32"),
    "ort-cpu": ("cpu", "fp32"),
    "ort-cuda": ("cuda", "fp32"),
    "tensorrt-fp32": ("cuda", "fp32"),
    "tensorrt-fp16": ("cuda", "fp16"),
    "torch-cuda": ("cuda", "fp32"),
    "torch-cuda-compiled": ("cuda", "fp32"),
    "torch-cuda-fp16": ("cuda", "fp16"),
    "torch-backend-cpu": ("cpu", "fp32"),
    "torch-backend-cuda": ("cuda", "fp16"),
}
#: ``--device`` presets.
DEVICE_BACKENDS: dict[str, tuple[str, ...]] = {
    "cpu": ("torch-cpu", "ort-cpu-default", "ort-cpu"),
    "cuda": ("torch-cuda", "torch-cuda-compiled", "torch-cuda-fp16", "torch-backend-cuda", "ort-cuda", "tensorrt-fp32",
             "tensorrt-fp16"),
    "all": tuple(BACKENDS),
}
#: The rows every other row is compared with (same graph and size).
BASELINE_TORCH = ("torch-cpu", "torch-cuda")  # the first one present in the run
BASELINE_ORT = "ort-cpu-default"
#: The project's shared data sits beside a checkout (../shared); REFUSION_SHARED overrides it.
DEFAULT_PIPELINE_SOURCE = Path(os.environ.get("REFUSION_SHARED", Path(__file__).resolve().parents[1].parent / "shared")) / "data/ivif/TNO/seq_Tree"


@dataclass(frozen=True)
class LatencyConfig:
    """What ``rfbench latency`` measures."""

    model: Path  # our checkpoint (*.pt) or an authors' .pth
    task: str | None = None  # for the authors' .pth files (they do not store it)
    backends: tuple[str, ...] = DEVICE_BACKENDS["cpu"]
    sizes: tuple[Size, ...] = (Size(256, 256), Size(480, 640))
    graphs: tuple[str, ...] = GRAPHS
    warmup: int = 2  # untimed runs per row (torch.compile compiles during these)
    iters: int = 10  # timed runs per row, fewer when a row would exceed max_row_s
    min_iters: int = 3
    max_row_s: float = 60.0  # time budget of one row's timed runs
    threads: int = 0  # CPU threads for torch and ORT; 0 = physical cores
    pair: tuple[Path, Path] | None = None  # (a, b) images; None = a synthetic structured pair
    work_dir: Path | None = None  # exported ONNX / plans go here; None = a temporary folder
    out_dir: Path | None = None  # where JSON + markdown are written; None = do not write
    overwrite: bool = False  # replace a result of the same name (else the new one gets a numbered name)
    pipeline: bool = False  # also time the rfrun pipeline per stage
    pipeline_source: Path | None = None  # folder with a/ b/ (or ir/ vis/) image sequences; None = TNO seq_Tree or demo
    pipeline_frames: int = 10
    pipeline_size: Size | None = None  # the pipeline run resizes its sources to this; None = the source's
    profile: bool = False  # ORT per-op profile (aggregated by op type) of ort-cpu-default and ort-cpu
    profile_size: Size = Size(240, 320)
    tag: str = ""  # appended to the result file names


@dataclass
class Row:
    """One (backend, graph, size) measurement. Times in ms, memory in MiB."""

    backend: str
    graph: str
    precision: str
    device: str
    size: list[int]
    status: str = "ok"  # "ok" or "skipped" or "failed"
    reason: str = ""
    warmup: int = 0
    iters: int = 0
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    fps: float | None = None
    max_err: float | None = None
    err_unit: str = ""
    speedup_vs_torch: float | None = None
    speedup_vs_ort_default: float | None = None
    peak_mem_mb: float | None = None
    mem_growth_mb: float | None = None  # peak minus the memory in use before the backend was prepared
    mem_kind: str = ""
    notes: str = ""
