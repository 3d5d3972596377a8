"""Latency of every inference backend, on both exported graphs, at several frame sizes.

One run measures, in the same process and on the same input pair:

- backends (:data:`BACKENDS`): PyTorch eager FP32 on the CPU (the baseline), ONNX Runtime CPU
  with default settings on the graph as traced (``ort-cpu-default``, the "unoptimised"
  reference), ONNX Runtime CPU as users get it (the export-time graph rewrites of
  ``refusion.export.optimize`` + ``refusion.runtime.ort_tuning.cpu_session_options``),
  ONNX Runtime CUDA, TensorRT FP32/FP16 plans, PyTorch CUDA eager / compiled / FP16, and rfrun's
  torch backend (``torch-backend-cuda``: FP16 with the float32 islands and CUDA graphs;
  ``torch-backend-cpu``: FP32);
- graphs: ``core`` (two float Y planes -> raw fused Y) and ``colour`` (two uint8 BGR frames
  -> fused uint8 BGR, what ``rfrun`` runs);
- sizes (H, W).

Per row: warm-up, then timed iterations (the device synchronised before the clock is read),
p50/p90/p99 and FPS, the max error against PyTorch FP32 on the same input (core: absolute
on the [0, 1] output; colour: uint8 levels), peak memory, and the speed-up against the
PyTorch-eager and unoptimised-ORT rows of the same graph and size. Backends that cannot run
here are listed as skipped with the reason. Results are written as JSON + markdown named
after the device, precisions and versions (:func:`result_stem`).

Timing conventions: torch ``core`` rows take inputs already on the device and leave the
output there (synchronised); every other row takes host arrays and returns host arrays
(the colour rows include the uint8 upload and download, like ``rfrun``).

Where each part lives: this module runs the measurement (:func:`run_latency`); what is measured
and one row's fields in :mod:`.latency_config`; the input pair, the network and its exports in
:mod:`.latency_models`; the rows of each backend family in :mod:`.latency_torch`,
:mod:`.latency_ort` (with the ORT profile) and :mod:`.latency_trt`; host facts and memory in
:mod:`.latency_env`; the result name, markdown and files in :mod:`.latency_report`.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from refusion.runtime.errors import EngineError, MissingDependencyError, RefusionError
from refusion.runtime.progress import Progress
from refusion.runtime.size import Size

from .latency_config import (
    BACKENDS,
    BASELINE_ORT,
    BASELINE_TORCH,
    DEFAULT_PIPELINE_SOURCE,
    DEVICE_BACKENDS,
    GRAPHS,
    SIZES,
    LatencyConfig,
    Row,
)
from .latency_env import host_info, measure_memory_end, measure_memory_start, versions
from .latency_models import Models, Prepared, Skip, input_pair, resize_pair, torch_or_skip
from .latency_ort import prepare_ort, run_profiles
from .latency_report import JSON_KEYS, MD_HEADER, ROW_KEYS, result_stem, to_markdown, write_report
from .latency_torch import prepare_torch, prepare_torch_backend
from .latency_trt import prepare_tensorrt

# The names callers and tests import from here, wherever they are defined.
__all__ = [
    "BACKENDS", "DEVICE_BACKENDS", "GRAPHS", "SIZES", "JSON_KEYS", "ROW_KEYS", "MD_HEADER", "LatencyConfig", "Row",
    "run_latency", "run_pipeline", "time_runner", "result_stem", "to_markdown", "write_report",
]


def _prepare(models: Models, backend: str, graph: str, a: np.ndarray, b: np.ndarray, threads: int) -> Prepared:
    if backend.startswith("torch-backend"):
        return prepare_torch_backend(models, backend, graph, a, b, threads)
    if backend.startswith("torch"):
        return prepare_torch(models, backend, graph, a, b, threads)
    if backend.startswith("ort"):
        return prepare_ort(models, backend, graph, a, b, threads)
    return prepare_tensorrt(models, backend, graph, a, b, threads)


# ----------------------------------------------------------------------------- timing


def time_runner(prep: Prepared, warmup: int, iters: int, min_iters: int, max_row_s: float) -> tuple[list[float], Any]:
    """Warm up, then time ``iters`` steps (fewer if over budget), synchronising before each clock read.

    Returns (per-iteration ms, the last output).
    """
    out = None
    for _ in range(max(1, warmup)):
        out = prep.step()
    prep.sync()
    times: list[float] = []
    t_row = time.perf_counter()
    for i in range(iters):
        t0 = time.perf_counter()
        out = prep.step()
        prep.sync()
        times.append((time.perf_counter() - t0) * 1e3)
        if i + 1 >= min_iters and time.perf_counter() - t_row > max_row_s:
            break
    return times, out


def _stats(times: Sequence[float]) -> dict[str, float]:
    t = np.asarray(times, np.float64)
    p50 = float(np.percentile(t, 50))
    return {
        "p50_ms": round(p50, 3),
        "p90_ms": round(float(np.percentile(t, 90)), 3),
        "p99_ms": round(float(np.percentile(t, 99)), 3),
        "mean_ms": round(float(t.mean()), 3),
        "fps": round(1e3 / p50, 3) if p50 > 0 else None,
    }


def _error(graph: str, out: np.ndarray, ref: np.ndarray) -> tuple[float, str]:
    if graph == "core":
        return float(np.abs(out.astype(np.float64) - ref.astype(np.float64)).max()), "abs"
    return float(np.abs(out.astype(np.int16) - ref.astype(np.int16)).max()), "levels"


def _reference(models: Models, graph: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """PyTorch FP32 output on the CPU (or the GPU when there is one): the error reference."""
    torch = torch_or_skip()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    prep = prepare_torch(models, "torch-cuda" if device == "cuda" else "torch-cpu", graph, a, b, models.config.threads)
    return prep.fetch(prep.step())


def _fill_ratios(rows: list[Row]) -> dict[str, str | None]:
    ok = [r for r in rows if r.status == "ok"]
    present = {r.backend for r in ok}
    torch_base = next((b for b in BASELINE_TORCH if b in present), None)
    for r in ok:
        for attr, base in (("speedup_vs_torch", torch_base), ("speedup_vs_ort_default", BASELINE_ORT)):
            ref = next((x for x in ok if x.backend == base and x.graph == r.graph and x.size == r.size), None)
            if ref is not None and ref.p50_ms and r.p50_ms:
                setattr(r, attr, round(ref.p50_ms / r.p50_ms, 3))
    return {"torch": torch_base, "ort_default": BASELINE_ORT if BASELINE_ORT in present else None}


# ----------------------------------------------------------------------------- pipeline


def _pipeline_folders(source: Path | None) -> tuple[str, str]:
    if source is None:
        if (DEFAULT_PIPELINE_SOURCE / "ir").is_dir():
            source = DEFAULT_PIPELINE_SOURCE
        else:
            from refusion.runtime.demo import demo_spec

            return demo_spec("ir", frames=30), demo_spec("vis", frames=30)
    source = Path(source)
    for a, b in (("ir", "vis"), ("a", "b")):
        if (source / a).is_dir() and (source / b).is_dir():
            return str(source / a), str(source / b)
    raise EngineError(f"{source}: expected two image folders ir/ and vis/ (or a/ and b/) for --pipeline")


def run_pipeline(config: LatencyConfig, models: Models, say: Callable[[str], None]) -> dict[str, Any]:
    """The rfrun pipeline (refusion.runtime.pipeline.run) on a recorded pair of sequences, per stage."""
    from refusion.runtime.backends.ort import OrtBackend
    from refusion.runtime.pipeline import RunConfig, run

    a, b = _pipeline_folders(config.pipeline_source)
    path = models.onnx("colour", optimized=True)
    backend = OrtBackend(path, device="cpu", threads=config.threads)
    rc = RunConfig(
        a=a, b=b, model=path, backend="ort-cpu", normalisation="ema", size=config.pipeline_size,
        max_frames=config.pipeline_frames,
    )
    summary = run(rc, backend=backend)
    say(f"pipeline: {summary.frames} frames at {summary.size}, {summary.fps:.2f} FPS")
    return {
        "sources": {"a": a, "b": b},
        "backend": summary.backend,
        "frames": summary.frames,
        "size": summary.size,
        "fps": summary.fps,
        "stages_ms": summary.stages_ms,
        "note": "ORT CPU colour graph through refusion.runtime.pipeline.run (file sources, ema normalisation)",
    }


# ----------------------------------------------------------------------------- main entry


def run_latency(config: LatencyConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Measure every (backend, graph, size) of ``config``; returns the report dict (see :data:`JSON_KEYS`).

    Writes ``<out_dir>/<result_stem>.json`` and ``.md`` when ``config.out_dir`` is set; what it does goes
    to ``progress`` as messages.
    """
    say = (progress or Progress()).message
    _check_config(config)
    report_dict: dict[str, Any] = {
        "schema": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": host_info(),
        "versions": versions(),
        "config": _config_dict(config),
    }
    pair = input_pair(config)
    with tempfile.TemporaryDirectory(prefix="rfbench-latency-") as tmp:
        work = Path(config.work_dir) if config.work_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        models = Models(config, work, say)
        models.load()  # a wrong model file is one error before any row, not a table of skipped rows
        rows, skipped = _measure_rows(config, models, pair, say)
        report_dict["baselines"] = _fill_ratios(rows)
        report_dict["rows"] = [asdict(r) for r in rows]
        report_dict["skipped"] = [{"backend": k[0], "graph": k[1], "reason": v} for k, v in skipped.items()]
        report_dict["profile"] = run_profiles(config, models, pair, say) if config.profile else None
        report_dict["pipeline"] = run_pipeline(config, models, say) if config.pipeline else None
    report_dict["host"]["loadavg_end"] = list(os.getloadavg())
    if config.out_dir is not None:
        write_report(report_dict, Path(config.out_dir), overwrite=config.overwrite)
    return report_dict


def _check_config(config: LatencyConfig) -> None:
    """EngineError for unknown backends or graphs; the results folder is checked before minutes of timing."""
    if config.out_dir is not None:
        from .results_io import check_results_dir

        check_results_dir(config.out_dir)  # before minutes of timing, not after
    unknown = [b for b in config.backends if b not in BACKENDS]
    if unknown:
        raise EngineError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    bad_graphs = [g for g in config.graphs if g not in GRAPHS]
    if bad_graphs:
        raise EngineError(f"unknown graph(s) {', '.join(bad_graphs)}; choose from {', '.join(GRAPHS)}")


def _measure_rows(config: LatencyConfig, models: Models, pair: tuple[np.ndarray, np.ndarray],
                  say: Callable[[str], None]) -> tuple[list[Row], dict[tuple[str, str], str]]:
    """Every (graph, size, backend) row, and why each skipped (backend, graph) was skipped."""
    # torch eager first: its output is the error reference of every other row
    order = sorted(config.backends, key=lambda b: (b not in BASELINE_TORCH, list(BACKENDS).index(b)))
    rows: list[Row] = []
    skipped: dict[tuple[str, str], str] = {}  # (backend, graph) -> why
    for graph in config.graphs:
        for h, w in config.sizes:
            a, b = resize_pair(pair, h, w)
            ref: np.ndarray | None = None
            for backend in order:
                row, ref = _measure_row(config, models, backend, graph, (h, w), a, b, ref, skipped, say)
                rows.append(row)
    return rows, skipped


def _measure_row(config: LatencyConfig, models: Models, backend: str, graph: str, size: Size,
                 a: np.ndarray, b: np.ndarray, ref: np.ndarray | None, skipped: dict[tuple[str, str], str],
                 say: Callable[[str], None]) -> tuple[Row, np.ndarray | None]:
    """One row: prepare, time, compare with ``ref`` (the torch FP32 output, made here when still None).

    A backend that cannot run here is recorded in ``skipped`` and not tried again for this graph.
    Returns the row and the error reference for the next rows of the same graph and size.
    """
    h, w = size
    device, precision = BACKENDS[backend]
    row = Row(backend, graph, precision, device, [h, w])
    if (backend, graph) in skipped:
        row.status, row.reason = "skipped", skipped[(backend, graph)]
        return row, ref
    mem = measure_memory_start(device)
    try:
        prep = _prepare(models, backend, graph, a, b, config.threads)
    except (Skip, MissingDependencyError) as exc:
        skipped[(backend, graph)] = str(exc)
        row.status, row.reason = "skipped", str(exc)
        say(f"skip {backend}: {exc}")
        return row, ref
    except (RefusionError, RuntimeError) as exc:  # e.g. an export check or a session that fails to load
        return _failed(row, exc, say), ref
    try:
        times, out = time_runner(prep, config.warmup, config.iters, config.min_iters, config.max_row_s)
        row.peak_mem_mb, row.mem_growth_mb, row.mem_kind = measure_memory_end(device, mem)
        result = prep.fetch(out)
    except (RefusionError, RuntimeError, MemoryError) as exc:
        _failed(row, exc, say)
        prep.close()
        return row, ref
    row.notes = prep.notes
    prep.close()  # released before the next row reads its memory baseline
    if ref is None and backend in BASELINE_TORCH:
        ref = result
    if ref is None:
        ref = _reference(models, graph, a, b)
    row.max_err, row.err_unit = _error(graph, result, ref)
    row.warmup, row.iters = max(1, config.warmup), len(times)
    for k, v in _stats(times).items():
        setattr(row, k, v)
    say(f"{backend:20s} {graph:6s} {h}x{w}: p50 {row.p50_ms:.1f} ms, max err {row.max_err:.3g} {row.err_unit}")
    return row, ref


def _failed(row: Row, exc: BaseException, say: Callable[[str], None]) -> Row:
    h, w = row.size
    row.status, row.reason = "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    say(f"{row.backend} {row.graph} {h}x{w} failed: {row.reason}")
    return row


def _config_dict(config: LatencyConfig) -> dict[str, Any]:
    d = asdict(config)
    for k, v in d.items():
        if isinstance(v, Path):
            d[k] = str(v)
        elif isinstance(v, tuple):
            d[k] = [list(x) if isinstance(x, tuple) else (str(x) if isinstance(x, Path) else x) for x in v]
    return d
