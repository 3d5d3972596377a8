"""Latency rows of the ONNX Runtime family (CPU default, CPU tuned, CUDA) and the ORT CPU per-op profile."""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from refusion.runtime.errors import RefusionError

from .latency_config import LatencyConfig
from .latency_models import Models, Prepared, Skip, colour_feeds, core_feeds, ort_or_skip, resize_pair


def prepare_ort(models: Models, backend: str, graph: str, a: np.ndarray, b: np.ndarray, threads: int) -> Prepared:
    ort = ort_or_skip()
    feeds = core_feeds(a, b) if graph == "core" else colour_feeds(a, b)
    if backend == "ort-cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise Skip(
                "onnxruntime has no CUDAExecutionProvider "
                f"(available: {', '.join(ort.get_available_providers())}); pip install onnxruntime-gpu"
            )
        path = models.onnx(graph, "fp32", optimized=True)
        if graph == "colour":  # what rfrun runs: the runtime backend with IO binding
            from refusion.runtime.backends.ort import OrtBackend

            try:
                be = OrtBackend(path, device="cuda").open()
            except RefusionError as exc:
                raise Skip(str(exc)) from None
            state = feeds["norm_state"]
            return Prepared(lambda: be.infer(a, b, state)[0].copy(), lambda out: out, close=be.close, notes=be.describe())
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(path), so, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        if sess.get_providers()[0] != "CUDAExecutionProvider":
            raise Skip(f"the CUDA provider did not load (session runs on {sess.get_providers()[0]})")
        return Prepared(lambda: sess.run(None, feeds)[0], _fetch_ort(graph), notes="host in/out")
    if backend == "ort-cpu-default":
        path = models.onnx(graph, "fp32")
        so = ort.SessionOptions()
        so.log_severity_level = 3
        notes = "graph as traced, default SessionOptions"
    else:
        from refusion.runtime.ort_tuning import cpu_session_options

        path = models.onnx(graph, "fp32", optimized=True)
        so = cpu_session_options(threads)
        notes = f"export/optimize.py graph, ort_tuning.cpu_session_options ({so.intra_op_num_threads} threads)"
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return Prepared(lambda: sess.run(None, feeds)[0], _fetch_ort(graph), notes=notes)


def _fetch_ort(graph: str) -> Callable[[Any], np.ndarray]:
    return (lambda out: out[0, 0]) if graph == "core" else (lambda out: out)


# ----------------------------------------------------------------------------- ORT profile


def profile_ort(path: Path, session_options: Any, feeds: dict[str, np.ndarray], runs: int = 2) -> dict[str, Any]:
    """Run ``path`` with ORT profiling; kernel time aggregated by op type (ms per run, share, count)."""
    ort = ort_or_skip()
    with tempfile.TemporaryDirectory() as tmp:
        session_options.enable_profiling = True
        session_options.profile_file_prefix = str(Path(tmp) / "ort_profile")
        sess = ort.InferenceSession(str(path), session_options, providers=["CPUExecutionProvider"])
        sess.run(None, feeds)  # warm-up (its kernels are counted too; divided out below)
        t0 = time.perf_counter()
        for _ in range(runs):
            sess.run(None, feeds)
        wall = (time.perf_counter() - t0) * 1e3 / runs
        events = json.loads(Path(sess.end_profiling()).read_text())
    total: dict[str, float] = {}
    count: dict[str, int] = {}
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            total[op] = total.get(op, 0.0) + e["dur"] / 1e3
            count[op] = count.get(op, 0) + 1
    n = runs + 1
    all_ms = sum(total.values()) or 1.0
    ops = sorted(total, key=total.get, reverse=True)  # type: ignore[arg-type]
    return {
        "wall_ms_per_run": round(wall, 2),
        "ops": [
            {"op": op, "ms_per_run": round(total[op] / n, 2), "share": round(total[op] / all_ms, 4), "nodes": count[op] // n}
            for op in ops
        ],
    }


def run_profiles(config: LatencyConfig, models: Models, pair: tuple[np.ndarray, np.ndarray], say: Callable[[str], None]) -> dict[str, Any]:
    ort = ort_or_skip()
    from refusion.runtime.ort_tuning import cpu_session_options

    h, w = config.profile_size
    a, b = resize_pair(pair, h, w)
    feeds = core_feeds(a, b)
    out = {"size": [h, w], "graph": "core"}
    so = ort.SessionOptions()
    so.log_severity_level = 3
    out["ort-cpu-default"] = profile_ort(models.onnx("core"), so, feeds)
    out["ort-cpu"] = profile_ort(models.onnx("core", optimized=True), cpu_session_options(config.threads), feeds)
    say(f"profiled ORT at {h}x{w}")
    out["ablation"] = ablation(models, config.threads, feeds)
    return out


def ablation(models: Models, threads: int, feeds: dict[str, np.ndarray], reps: int = 5) -> list[dict[str, Any]]:
    """Which change buys what: {traced, optimised graph} x {default, tuned, tuned without NCHWc, tuned + spinning}.

    The sessions run interleaved (one run of each per round) so load changes hit all alike;
    p50 over ``reps`` rounds, core graph.
    """
    ort = ort_or_skip()
    from refusion.runtime.ort_tuning import cpu_session_options

    def default() -> Any:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        return so

    def extended() -> Any:
        so = cpu_session_options(threads)
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        return so

    variants = [
        ("traced", "default SessionOptions", models.onnx("core"), default),
        ("traced", "cpu_session_options", models.onnx("core"), lambda: cpu_session_options(threads)),
        ("optimised", "default SessionOptions", models.onnx("core", optimized=True), default),
        ("optimised", "cpu_session_options", models.onnx("core", optimized=True), lambda: cpu_session_options(threads)),
        ("optimised", "cpu_session_options, ORT_ENABLE_EXTENDED (no NCHWc)", models.onnx("core", optimized=True), extended),
        ("optimised", "cpu_session_options, spinning on", models.onnx("core", optimized=True),
         lambda: cpu_session_options(threads, spinning=True)),
    ]
    sessions = []
    for _, _, path, make in variants:
        sess = ort.InferenceSession(str(path), make(), providers=["CPUExecutionProvider"])
        sess.run(None, feeds)
        sessions.append(sess)
    times: list[list[float]] = [[] for _ in variants]
    for _ in range(reps):
        for i, sess in enumerate(sessions):
            t0 = time.perf_counter()
            sess.run(None, feeds)
            times[i].append((time.perf_counter() - t0) * 1e3)
    return [
        {"graph": g, "options": o, "p50_ms": round(float(np.median(t)), 2), "min_ms": round(min(t), 2)}
        for (g, o, _, _), t in zip(variants, times)
    ]
