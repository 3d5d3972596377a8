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
"""
from __future__ import annotations

import json
import os
import platform
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from refusion.runtime.errors import EngineError, MissingDependencyError, RefusionError

Reporter = Callable[[str], None]

SIZES: tuple[tuple[int, int], ...] = ((256, 256), (480, 640), (720, 1280), (1080, 1920))
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
JSON_KEYS = ("schema", "created", "host", "versions", "config", "rows", "skipped", "pipeline", "profile", "baselines")
ROW_KEYS = (
    "backend", "graph", "precision", "device", "size", "status", "reason", "warmup", "iters",
    "p50_ms", "p90_ms", "p99_ms", "mean_ms", "fps", "max_err", "err_unit", "speedup_vs_torch",
    "speedup_vs_ort_default", "peak_mem_mb", "mem_growth_mb", "mem_kind", "notes",
)
MD_HEADER = (
    "| backend | graph | precision | size (HxW) | p50 ms | p90 ms | p99 ms | FPS | max err | "
    "x vs torch eager | x vs ORT default | peak MB |"
)
#: The project's shared data sits beside a checkout (../shared); REFUSION_SHARED overrides it.
DEFAULT_PIPELINE_SOURCE = Path(os.environ.get("REFUSION_SHARED", Path(__file__).resolve().parents[1].parent / "shared")) / "data/ivif/TNO/seq_Tree"


@dataclass(frozen=True)
class LatencyConfig:
    """What ``rfbench latency`` measures."""

    model: Path  # our checkpoint (*.pt) or an authors' .pth
    task: str | None = None  # for the authors' .pth files (they do not store it)
    backends: tuple[str, ...] = DEVICE_BACKENDS["cpu"]
    sizes: tuple[tuple[int, int], ...] = ((256, 256), (480, 640))  # (H, W)
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
    pipeline_size: tuple[int, int] | None = None  # (W, H) for the pipeline run; None = the source's
    profile: bool = False  # ORT per-op profile (aggregated by op type) of ort-cpu-default and ort-cpu
    profile_size: tuple[int, int] = (240, 320)
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


# ----------------------------------------------------------------------------- environment


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # not installed: recorded as absent
        return None


def versions() -> dict[str, str | None]:
    out = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": _version("torch"),
        "onnx": _version("onnx"),
        "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu"),
        "opencv": _version("opencv-python-headless") or _version("opencv-python"),
        "tensorrt": _version("tensorrt") or _version("tensorrt-cu13") or _version("tensorrt-cu12"),
        "refusion": _version("refusion"),
        "cuda": None,
    }
    try:
        import torch

        out["cuda"] = torch.version.cuda
    except ImportError:
        pass
    return out


def gpu_name() -> str | None:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return None


def host_info() -> dict[str, Any]:
    from refusion.runtime.ort_tuning import physical_cores

    return {
        "cpu_model": cpu_model(),
        "physical_cores": physical_cores(),
        "logical_cpus": os.cpu_count(),
        "gpu": gpu_name(),
        "os": platform.platform(),
        "loadavg_start": list(os.getloadavg()),
        "loadavg_end": None,
    }


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")


def result_stem(report: dict[str, Any]) -> str:
    """``latency_<device>_<device kind>-<precisions>_<versions>[_tag]``, e.g.
    ``latency_AMD-EPYC-2c_cpu-fp32_ort1.32.0_torch2.13.0``."""
    host, ver = report["host"], report["versions"]
    ok = [r for r in report["rows"] if r["status"] == "ok"]
    kinds = sorted({r["device"] for r in ok}) or ["none"]
    precisions = sorted({r["precision"] for r in ok}) or ["none"]
    if "cuda" in kinds and host.get("gpu"):
        device = _slug(host["gpu"].replace("NVIDIA", ""))
    else:
        device = _slug(host["cpu_model"].split("@")[0]) + f"-{host['physical_cores']}c"
    parts = [f"ort{ver['onnxruntime']}" if ver.get("onnxruntime") else "", f"torch{ver['torch']}" if ver.get("torch") else ""]
    if ver.get("tensorrt") and any(r["backend"].startswith("tensorrt") for r in ok):
        parts.append(f"trt{ver['tensorrt']}")
    tag = report["config"].get("tag")
    fields = ["latency", device, f"{'-'.join(kinds)}-{'-'.join(precisions)}", *(p for p in parts if p), tag or ""]
    return "_".join(_slug(f) for f in fields if f)


# ----------------------------------------------------------------------------- memory


def _reset_rss_peak() -> bool:
    """Reset the process' VmHWM (Linux >= 4.0); False when not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_peak_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    return None


# ----------------------------------------------------------------------------- inputs and models


def input_pair(config: LatencyConfig) -> tuple[np.ndarray, np.ndarray]:
    """The uint8 BGR pair every row runs on (resized per size)."""
    if config.pair is None:
        from refusion.export.onnx_export import synthetic_pair

        return synthetic_pair(480, 640)
    from refusion.runtime.imageio import read_image

    return read_image(config.pair[0]), read_image(config.pair[1])


def resize_pair(pair: tuple[np.ndarray, np.ndarray], h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    a, b = (np.ascontiguousarray(cv2.resize(x, (w, h), interpolation=cv2.INTER_AREA)) for x in pair)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if b.ndim == 2:
        b = np.repeat(b[..., None], 3, axis=2)
    return a, b


def core_inputs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Y planes of two uint8 BGR frames as float32 (1, 1, H, W) in [0, 1]."""
    from refusion.runtime.colour import luma_bgr

    return luma_bgr(a)[None, None].astype(np.float32), luma_bgr(b)[None, None].astype(np.float32)


class Models:
    """Loads the network once and exports the ONNX files the rows need, on demand."""

    def __init__(self, config: LatencyConfig, work_dir: Path, say: Reporter) -> None:
        self.config, self.dir, self.say = config, work_dir, say
        self._loaded: Any = None
        self._files: dict[str, Path] = {}

    @property
    def loaded(self) -> Any:
        if self._loaded is None:
            from refusion.train.checkpoint import load_fusion_model

            self._loaded = load_fusion_model(self.config.model, self.config.task)
        return self._loaded

    def onnx(self, graph: str, precision: str = "fp32", optimized: bool = False) -> Path:
        """Path of the ONNX file (exported with ``refusion.export``), optionally with the export-time rewrites."""
        key = f"{graph}.{precision}" + (".opt" if optimized else "")
        if key in self._files:
            return self._files[key]
        path = self.dir / f"model.{key}.onnx"
        if optimized:
            import onnx

            from refusion.export.optimize import optimize_model

            raw = self.onnx(graph, precision)
            model, rep = optimize_model(onnx.load(str(raw)))
            onnx.save(model, str(path))
            self.say(f"{path.name}: {rep.describe()}")
        else:
            import inspect

            from refusion.export.onnx_export import build_card, export_graph

            # The unoptimised reference is the graph as traced: when the exporter applies
            # export/optimize.py itself (``optimize=True``), ask it not to here.
            extra = {"optimize": False} if "optimize" in inspect.signature(export_graph).parameters else {}
            t0 = time.perf_counter()
            export_graph(self.loaded.net, graph, precision == "fp16", path, build_card(self.loaded), **extra)
            self.say(f"exported {path.name} in {time.perf_counter() - t0:.1f} s")
        self._files[key] = path
        return path

    def torch_module(self, graph: str, half: bool) -> Any:
        from refusion.export.graphs import ColourGraph, CoreGraph, exportable

        net = exportable(self.loaded.net, half=half)
        return (CoreGraph if graph == "core" else ColourGraph)(net, half=half).eval()


# ----------------------------------------------------------------------------- runners
# A runner prepares one (graph, size) and returns ``step() -> output`` (host numpy for
# comparisons is produced by ``fetch(output)``); ``sync()`` waits for the device.


@dataclass
class Prepared:
    step: Callable[[], Any]
    fetch: Callable[[Any], np.ndarray]
    sync: Callable[[], None] = lambda: None
    close: Callable[[], None] = lambda: None
    notes: str = ""


class Skip(Exception):
    """This backend cannot run here; the message says why."""


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise Skip("PyTorch is not installed (pip install torch)") from None
    return torch


def _ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise Skip("onnxruntime is not installed (pip install 'refusion[cpu]' or 'refusion[gpu]')") from None
    return ort


def _core_feeds(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    ya, yb = core_inputs(a, b)
    return {"a": ya, "b": yb}


def _colour_feeds(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    return {"a": a, "b": b, "norm_state": np.zeros(3, np.float32)}


def prepare_torch(models: Models, backend: str, graph: str, a: np.ndarray, b: np.ndarray, threads: int) -> Prepared:
    torch = _torch()
    device = "cuda" if backend.startswith("torch-cuda") else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise Skip("no CUDA device visible to PyTorch (torch.cuda.is_available() is False)")
    if device == "cpu":
        from refusion.runtime.ort_tuning import physical_cores

        torch.set_num_threads(threads or physical_cores())
    half = backend.endswith("fp16")
    module = models.torch_module(graph, half).to(device)
    if backend == "torch-cuda-compiled":
        module = torch.compile(module)
    if graph == "core":
        ya, yb = core_inputs(a, b)
        xa, xb = torch.from_numpy(ya).to(device), torch.from_numpy(yb).to(device)

        def step() -> Any:
            with torch.inference_mode():
                return module(xa, xb)

        fetch = lambda out: out.float().cpu().numpy()[0, 0]  # noqa: E731
    else:
        state = torch.zeros(3, device=device)

        def step() -> Any:
            with torch.inference_mode():
                fused, _ = module(torch.from_numpy(a).to(device), torch.from_numpy(b).to(device), state)
                return fused.cpu()  # host out, like rfrun

        fetch = lambda out: out.numpy()  # noqa: E731
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    notes = "inputs on device" if graph == "core" else "host uint8 in/out"
    if device == "cpu":
        notes += f", {torch.get_num_threads()} threads"
    return Prepared(step, fetch, sync, notes=notes)


def prepare_ort(models: Models, backend: str, graph: str, a: np.ndarray, b: np.ndarray, threads: int) -> Prepared:
    ort = _ort()
    feeds = _core_feeds(a, b) if graph == "core" else _colour_feeds(a, b)
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


def prepare_tensorrt(models: Models, backend: str, graph: str, a: np.ndarray, b: np.ndarray, threads: int) -> Prepared:
    if graph != "colour":
        raise Skip("the TensorRT backend runs colour-graph engines only (rfrun's graph)")
    from refusion.runtime.backends.tensorrt import gpu_count, import_tensorrt

    try:
        import_tensorrt()
    except MissingDependencyError as exc:
        raise Skip(str(exc)) from None
    if gpu_count() == 0:
        raise Skip("no usable NVIDIA GPU (cudaGetDeviceCount found none, or cuda-python is missing)")
    from refusion.export.tensorrt_build import EngineConfig, build_engine
    from refusion.runtime.backends.tensorrt import TensorRTBackend

    precision = "fp16" if backend.endswith("fp16") else "fp32"
    onnx_path = models.onnx("colour", precision)
    plan = onnx_path.with_suffix(".plan")
    h, w = a.shape[:2]
    if not plan.exists():
        try:
            build_engine(EngineConfig(onnx=onnx_path, out=plan, min_size=(h, w), opt_size=(h, w), max_size=(h, w), overwrite=True))
        except RefusionError as exc:
            raise Skip(f"engine build failed: {exc}") from None
    be = TensorRTBackend(plan).open()
    state = np.zeros(3, np.float32)
    plan_for_size = plan

    def close() -> None:
        be.close()
        plan_for_size.unlink(missing_ok=True)  # next size builds its own profile
        plan_for_size.with_name(plan_for_size.name + ".json").unlink(missing_ok=True)

    return Prepared(lambda: be.infer(a, b, state)[0].copy(), lambda out: out, close=close, notes=be.describe())


def prepare_torch_backend(models: Models, backend: str, graph: str, a: np.ndarray, b: np.ndarray, threads: int) -> Prepared:
    """rfrun's torch backend: colour rows through ``infer`` (host uint8 in/out, like rfrun); core rows
    run F alone on device-resident inputs (CUDA graph on a GPU), like the other torch core rows."""
    torch = _torch()
    device = "cuda" if backend.endswith("cuda") else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise Skip("no CUDA device visible to PyTorch (torch.cuda.is_available() is False)")
    from refusion.runtime.backends.torch_backend import TorchBackend

    if device == "cpu":
        from refusion.runtime.ort_tuning import physical_cores

        threads = threads or physical_cores()
    be = TorchBackend(models.config.model, device=device, task=models.config.task, threads=threads).open()
    notes = be.describe() + (f", {torch.get_num_threads()} threads" if device == "cpu" else "")
    if graph == "core":
        ya, yb = core_inputs(a, b)
        step, sync = be.core_runner(ya[0, 0], yb[0, 0])
        return Prepared(step, lambda out: out.float().cpu().numpy()[0, 0], sync, close=be.close,
                        notes=notes + ", inputs on device")
    state = np.zeros(3, np.float32)
    return Prepared(lambda: be.infer(a, b, state)[0].copy(), lambda out: out, close=be.close,
                    notes=notes + ", host uint8 in/out")


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
    torch = _torch()
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


# ----------------------------------------------------------------------------- ORT profile


def profile_ort(path: Path, session_options: Any, feeds: dict[str, np.ndarray], runs: int = 2) -> dict[str, Any]:
    """Run ``path`` with ORT profiling; kernel time aggregated by op type (ms per run, share, count)."""
    ort = _ort()
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


def run_profiles(config: LatencyConfig, models: Models, pair: tuple[np.ndarray, np.ndarray], say: Reporter) -> dict[str, Any]:
    ort = _ort()
    from refusion.runtime.ort_tuning import cpu_session_options

    h, w = config.profile_size
    a, b = resize_pair(pair, h, w)
    feeds = _core_feeds(a, b)
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
    ort = _ort()
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


def run_pipeline(config: LatencyConfig, models: Models, say: Reporter) -> dict[str, Any]:
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


def run_latency(config: LatencyConfig, report: Reporter | None = None) -> dict[str, Any]:
    """Measure every (backend, graph, size) of ``config``; returns the report dict (see :data:`JSON_KEYS`).

    Writes ``<out_dir>/<result_stem>.json`` and ``.md`` when ``config.out_dir`` is set.
    """
    say = report or (lambda _m: None)
    if config.out_dir is not None:
        from .results_io import check_results_dir

        check_results_dir(config.out_dir)  # before minutes of timing, not after
    unknown = [b for b in config.backends if b not in BACKENDS]
    if unknown:
        raise EngineError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    bad_graphs = [g for g in config.graphs if g not in GRAPHS]
    if bad_graphs:
        raise EngineError(f"unknown graph(s) {', '.join(bad_graphs)}; choose from {', '.join(GRAPHS)}")
    report_dict: dict[str, Any] = {
        "schema": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": host_info(),
        "versions": versions(),
        "config": _config_dict(config),
    }
    # torch eager first: its output is the error reference of every other row
    order = sorted(config.backends, key=lambda b: (b not in BASELINE_TORCH, list(BACKENDS).index(b)))
    pair = input_pair(config)
    rows: list[Row] = []
    skipped: dict[tuple[str, str], str] = {}  # (backend, graph) -> why
    with tempfile.TemporaryDirectory(prefix="rfbench-latency-") as tmp:
        work = Path(config.work_dir) if config.work_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        models = Models(config, work, say)
        for graph in config.graphs:
            for h, w in config.sizes:
                a, b = resize_pair(pair, h, w)
                ref: np.ndarray | None = None
                for backend in order:
                    device, precision = BACKENDS[backend]
                    row = Row(backend, graph, precision, device, [h, w])
                    if (backend, graph) in skipped:
                        row.status, row.reason = "skipped", skipped[(backend, graph)]
                        rows.append(row)
                        continue
                    mem = _measure_memory_start(device)
                    try:
                        prep = _prepare(models, backend, graph, a, b, config.threads)
                    except (Skip, MissingDependencyError) as exc:
                        skipped[(backend, graph)] = str(exc)
                        row.status, row.reason = "skipped", str(exc)
                        rows.append(row)
                        say(f"skip {backend}: {exc}")
                        continue
                    except (RefusionError, RuntimeError) as exc:  # e.g. an export check or a session that fails to load
                        row.status, row.reason = "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                        rows.append(row)
                        say(f"{backend} {graph} {h}x{w} failed: {row.reason}")
                        continue
                    try:
                        times, out = time_runner(prep, config.warmup, config.iters, config.min_iters, config.max_row_s)
                        row.peak_mem_mb, row.mem_growth_mb, row.mem_kind = _measure_memory_end(device, mem)
                        result = prep.fetch(out)
                    except (RefusionError, RuntimeError, MemoryError) as exc:
                        row.status, row.reason = "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                        rows.append(row)
                        say(f"{backend} {graph} {h}x{w} failed: {row.reason}")
                        prep.close()
                        prep = None
                        continue
                    row.notes = prep.notes
                    prep.close()
                    prep = None  # released before the next row reads its memory baseline
                    if ref is None and backend in BASELINE_TORCH:
                        ref = result
                    if ref is None:
                        ref = _reference(models, graph, a, b)
                    row.max_err, row.err_unit = _error(graph, result, ref)
                    row.warmup, row.iters = max(1, config.warmup), len(times)
                    for k, v in _stats(times).items():
                        setattr(row, k, v)
                    rows.append(row)
                    say(f"{backend:20s} {graph:6s} {h}x{w}: p50 {row.p50_ms:.1f} ms, max err {row.max_err:.3g} {row.err_unit}")
        report_dict["baselines"] = _fill_ratios(rows)
        report_dict["rows"] = [asdict(r) for r in rows]
        report_dict["skipped"] = [{"backend": k[0], "graph": k[1], "reason": v} for k, v in skipped.items()]
        report_dict["profile"] = run_profiles(config, models, pair, say) if config.profile else None
        report_dict["pipeline"] = run_pipeline(config, models, say) if config.pipeline else None
    report_dict["host"]["loadavg_end"] = list(os.getloadavg())
    if config.out_dir is not None:
        write_report(report_dict, Path(config.out_dir), overwrite=config.overwrite)
    return report_dict


def _config_dict(config: LatencyConfig) -> dict[str, Any]:
    d = asdict(config)
    for k, v in d.items():
        if isinstance(v, Path):
            d[k] = str(v)
        elif isinstance(v, tuple):
            d[k] = [list(x) if isinstance(x, tuple) else (str(x) if isinstance(x, Path) else x) for x in v]
    return d


def _measure_memory_start(device: str) -> Any:
    """Memory in use before a row's backend is prepared (MiB), after resetting the peak counters."""
    if device == "cuda":
        try:
            import torch

            if not torch.cuda.is_available():
                return None
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            free, total = torch.cuda.mem_get_info()
            return {"used": (total - free) / 2**20, "allocated": torch.cuda.memory_allocated() / 2**20}
        except Exception:  # no torch / no CUDA: memory is then not reported
            return None
    import gc

    gc.collect()  # sessions of earlier rows are released before the baseline is read
    reset = _reset_rss_peak()
    return {"reset": reset, "rss": _rss_peak_mb() if reset else None}


def _measure_memory_end(device: str, start: Any) -> tuple[float | None, float | None, str]:
    """(peak MiB, growth over the start MiB, what was measured)."""
    if not start:
        return None, None, ""
    if device == "cuda":
        try:
            import torch

            free, total = torch.cuda.mem_get_info()
            used = (total - free) / 2**20
            peak_torch = torch.cuda.max_memory_allocated() / 2**20
            growth = max(peak_torch - start["allocated"], used - start["used"])
            return round(max(peak_torch, used), 1), round(growth, 1), "cuda: device memory in use (all processes) / torch peak allocated"
        except Exception:  # no torch / no CUDA
            return None, None, ""
    peak = _rss_peak_mb()
    if not start["reset"]:
        return peak, None, "process peak RSS since start (VmHWM could not be reset)"
    growth = round(peak - start["rss"], 1) if peak is not None and start["rss"] is not None else None
    return peak, growth, "process peak RSS (VmHWM reset before the row); growth = peak - RSS before the row"


# ----------------------------------------------------------------------------- output


def _fmt(x: Any, digits: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _growth(row: dict[str, Any]) -> str:
    g = row.get("mem_growth_mb")
    return "" if g is None else f" ({g:+.0f})"


def to_markdown(report: dict[str, Any]) -> str:
    host, ver = report["host"], report["versions"]
    lines = [
        f"# rfbench latency: {host['gpu'] or host['cpu_model']}",
        "",
        f"- CPU: {host['cpu_model']} ({host['physical_cores']} physical cores, {host['logical_cpus']} logical); "
        f"GPU: {host['gpu'] or 'none'}",
        f"- load average (1, 5, 15 min) at start {host['loadavg_start']}, at end {host['loadavg_end']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in ver.items() if v),
        f"- created {report['created']}; warm-up {report['config']['warmup']}, up to {report['config']['iters']} timed runs per row",
        f"- baselines: torch eager = `{report['baselines'].get('torch')}`, ORT default = `{report['baselines'].get('ort_default')}` "
        "(same graph, size and run); x = baseline p50 / row p50",
        "- max err: core = max |out - torch FP32| on the [0, 1] output; colour = max uint8 levels",
        "- peak MB: process peak RSS during the row (CPU) or device memory in use (CUDA); (+N) = growth during the row",
        "",
        MD_HEADER,
        "|" + "|".join(["---"] * (MD_HEADER.count("|") - 1)) + "|",
    ]
    for r in report["rows"]:
        if r["status"] != "ok":
            continue
        err = "-" if r["max_err"] is None else (f"{r['max_err']:.2e}" if r["err_unit"] == "abs" else f"{r['max_err']:.0f} lv")
        lines.append(
            f"| {r['backend']} | {r['graph']} | {r['precision']} | {r['size'][0]}x{r['size'][1]} | {_fmt(r['p50_ms'])} | "
            f"{_fmt(r['p90_ms'])} | {_fmt(r['p99_ms'])} | {_fmt(r['fps'], 2)} | {err} | {_fmt(r['speedup_vs_torch'], 2)} | "
            f"{_fmt(r['speedup_vs_ort_default'], 2)} | {_fmt(r['peak_mem_mb'], 0)}{_growth(r)} |"
        )
    failed = [r for r in report["rows"] if r["status"] == "failed"]
    if report["skipped"] or failed:
        lines += ["", "## Skipped", ""]
        lines += [f"- `{s['backend']}` ({s['graph']} graph): {s['reason']}" for s in report["skipped"]]
        lines += [f"- `{r['backend']}` {r['graph']} {r['size'][0]}x{r['size'][1]} failed: {r['reason']}" for r in failed]
    notes = sorted({(r["backend"], r["graph"], r["notes"]) for r in report["rows"] if r["status"] == "ok" and r["notes"]})
    if notes:
        lines += ["", "## Row notes", ""] + [f"- `{b}` ({g}): {n}" for b, g, n in notes]
    prof = report.get("profile")
    if prof:
        lines += ["", f"## ORT CPU profile ({prof['graph']} graph, {prof['size'][0]}x{prof['size'][1]}, kernel time by op type)", ""]
        for name in ("ort-cpu-default", "ort-cpu"):
            p = prof[name]
            lines += [f"`{name}`: {p['wall_ms_per_run']} ms per run (profiling on)", "", "| op | ms/run | share | nodes |", "|---|---|---|---|"]
            lines += [f"| {o['op']} | {o['ms_per_run']} | {100 * o['share']:.1f}% | {o['nodes']} |" for o in p["ops"][:12]]
            lines.append("")
        if prof.get("ablation"):
            lines += ["Ablation (core graph, sessions interleaved, profiling off):", "",
                      "| graph | session options | p50 ms | min ms |", "|---|---|---|---|"]
            lines += [f"| {x['graph']} | {x['options']} | {x['p50_ms']} | {x['min_ms']} |" for x in prof["ablation"]]
    pipe = report.get("pipeline")
    if pipe:
        lines += ["", f"## Pipeline ({pipe['backend']}, {pipe['frames']} frames at {pipe['size']}, {pipe['fps']} FPS)", ""]
        lines += [f"sources: {pipe['sources']['a']} + {pipe['sources']['b']}", "", "| stage | p50 ms | p95 ms | p99 ms |", "|---|---|---|---|"]
        for stage, s in pipe["stages_ms"].items():
            lines.append(f"| {stage} | {_fmt(s.get('p50'), 2)} | {_fmt(s.get('p95'), 2)} | {_fmt(s.get('p99'), 2)} |")
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out_dir: Path, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` into ``out_dir`` atomically; returns both paths.

    An existing result is kept unless ``overwrite``: the new one gets a numbered stem.
    """
    from .results_io import write_results

    js, md = write_results(out_dir, result_stem(report), json.dumps(report, indent=2, default=str) + "\n",
                           to_markdown(report), overwrite=overwrite)
    report.setdefault("files", [str(js), str(md)])
    return js, md
