"""Fusion-quality benchmark: fuse a test split with models and baselines, score the results.

A *method* is one of:
- a refusion checkpoint (``*.pt``) or an authors' released ``*.pth``: run with
  torch through refusion.train (torch is imported only then);
- an ONNX core graph (``*.onnx``: inputs ``a``, ``b`` float32 (N, 1, H, W) in
  [0, 1] -> raw sigmoid output (N, 1, H, W)), run with onnxruntime on the CPU and
  min-max normalised per image like refusion.train.fuse;
- a classical baseline from refusion.benchmarks.baselines.

Metrics are computed on grey 0-255 images: the sources' luma (OpenCV BGR->grey,
uint8) and the fused Y plane (uint8) each method produces. The report holds the
mean and (population) standard deviation of every metric over the pairs and the
mean fusion time per image (first pair excluded as warm-up when there are more).
"""
from __future__ import annotations

import logging
import math
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from refusion.runtime._deps import require
from refusion.runtime.colour import STILL_NORMALISATIONS, normalise_output
from refusion.runtime.errors import CheckpointError, DataError, SizeError
from refusion.runtime.imageio import pair_folders, read_image, write_image
from refusion.runtime.progress import Progress

from refusion.runtime import metrics as M
from .baselines import check_pair, compose_colour, get_baseline, to_uint8, ycrcb01
from .paper_numbers import add_paper_row
from .quality_report import check_outputs, report_paths, report_to_markdown, write_report  # noqa: F401 (re-exported)

from refusion.runtime.tasks import TASK_SOURCES, TASKS  # noqa: E402

log = logging.getLogger(__name__)

#: Source role folders per task, in network order (source a first).
TASK_ROLES = TASK_SOURCES

MODEL_SUFFIXES = (".pt", ".pth", ".onnx")

#: (grey Y (H, W) uint8, colour BGR (H, W, 3) uint8) from two uint8 BGR sources.
FuseFn = Callable[[np.ndarray, np.ndarray], "tuple[np.ndarray, np.ndarray]"]


@dataclass(frozen=True)
class QualityConfig:
    """What ``rfbench quality`` evaluates."""

    task: str  # one of TASKS
    data: Path  # split folder holding the two role folders
    models: tuple[Path, ...] = ()  # .pt / .pth / .onnx files
    baselines: tuple[str, ...] = ()  # names from refusion.benchmarks.baselines.BASELINES
    metrics: tuple[str, ...] = ()  # canonical metric names; empty = the task's defaults
    limit: int | None = None  # first N pairs only (quick runs)
    save_images_to: Path | None = None  # folder for fused images (one subfolder per method)
    paper_dataset: str | None = None  # add the paper's row for this dataset (MSRS, RoadScene, Lytro, MEFB)
    device: str = "cpu"  # torch device for .pt/.pth models
    normalisation: str = "minmax"  # models' output mapping: per-image min-max (the authors') or "none" (raw sigmoid)

    def metric_names(self) -> tuple[str, ...]:
        return self.metrics or M.DEFAULT_METRICS[self.task]


@dataclass(frozen=True)
class Pair:
    name: str  # common file stem
    path_a: Path
    path_b: Path


@dataclass
class Method:
    """A named fusion function with provenance."""

    label: str
    kind: str  # "baseline", "onnx", "refusion", "official"
    source: str  # file path or baseline description
    fuse: FuseFn


@dataclass
class MethodResult:
    label: str
    kind: str
    source: str
    values: dict[str, list[float]] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)

    def row(self) -> dict:
        times = self.seconds[1:] if len(self.seconds) > 1 else self.seconds
        return {
            "method": self.label,
            "kind": self.kind,
            "source": self.source,
            "n": len(self.seconds),
            "seconds_per_image": float(np.mean(times)) if times else None,
            "mean": {k: _finite(np.mean(v)) for k, v in self.values.items()},
            "std": {k: _finite(np.std(v)) for k, v in self.values.items()},
        }


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


# ----------------------------------------------------------------------------- data
def find_pairs(data: str | Path, task: str) -> list[Pair]:
    """Pairs of ``data/<role a>/X`` and ``data/<role b>/X`` matched by file stem, natural order.

    Raises DataError when the folder or a role folder is missing, has no images,
    or when some file has no partner (the unpaired names are listed).
    """
    if task not in TASK_ROLES:
        raise DataError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    root = Path(data)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    role_a, role_b = TASK_ROLES[task]
    for role in (role_a, role_b):
        if not (root / role).is_dir():
            have = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise DataError(
                f"{root} has no '{role}' folder; task {task} needs '{role_a}' and '{role_b}' "
                f"(found: {', '.join(have) or 'no folders'})"
            )
    try:
        pairs = pair_folders(root / role_a, root / role_b)
    except DataError as exc:
        raise DataError(f"{root}: {exc}") from None
    return [Pair(n, pa, pb) for n, pa, pb in pairs]


def source_grey(bgr: np.ndarray) -> np.ndarray:
    """Grey 0-255 uint8 (H, W) of a uint8 BGR source (OpenCV luma, as cv2.imread(..., 0))."""
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)


# ----------------------------------------------------------------------------- methods
def onnx_method(path: Path, label: str, normalisation: str = "minmax") -> Method:
    """A Method running an ONNX core graph with onnxruntime on the CPU.

    ``normalisation``: "minmax" stretches each output to [0, 1] (the authors' stills), "none" keeps the
    sigmoid output as it is (what ``rfrun --norm none`` shows).
    """
    ort = require("onnxruntime", "running ONNX models in rfbench quality")
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise CheckpointError(f"cannot load ONNX model {path}: {exc}") from exc
    names = [i.name for i in sess.get_inputs()]
    if sorted(names) != ["a", "b"]:
        raise CheckpointError(
            f"{path} is not a ReFusion core graph: inputs are {names}, expected a and b (float32 N,1,H,W); "
            "the colour graph (uint8 HWC) is not supported here"
        )
    out_name = sess.get_outputs()[0].name

    def fuse(bgr_a: np.ndarray, bgr_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ya, yb = ycrcb01(bgr_a)[..., 0], ycrcb01(bgr_b)[..., 0]
        feeds = {"a": ya[None, None].astype(np.float32), "b": yb[None, None].astype(np.float32)}
        try:
            raw = sess.run([out_name], feeds)[0]
        except Exception as exc:
            raise CheckpointError(f"ONNX model {path} failed on a {ya.shape[1]}x{ya.shape[0]} image: {exc}") from exc
        y = normalise_output(np.asarray(raw, np.float32).reshape(ya.shape), normalisation)
        return to_uint8(y * 255.0), compose_colour(y, bgr_a, bgr_b)

    return Method(label, "onnx", str(path), fuse)


def torch_method(path: Path, label: str, task: str, device: str, normalisation: str = "minmax") -> Method:
    """A Method running a refusion .pt or an authors' .pth with torch (imported here only); see onnx_method."""
    require("torch", "running .pt/.pth models in rfbench quality")
    from refusion.train.checkpoint import load_fusion_model
    from refusion.train.fuse import fuse_pair

    loaded = load_fusion_model(path, task=task)
    if loaded.task is not None and loaded.task != task:
        raise CheckpointError(f"{path} is a {loaded.task} model, but the benchmark task is {task}")
    net = loaded.net

    def fuse(bgr_a: np.ndarray, bgr_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = fuse_pair(net, bgr_a, bgr_b, normalisation=normalisation, device=device)
        return out.grey, out.bgr

    return Method(label, loaded.kind, str(path), fuse)


def baseline_method(name: str) -> Method:
    try:
        base = get_baseline(name)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    return Method(base.name, "baseline", base.description, base.fuse_both)


def model_method(path: str | Path, task: str, device: str = "cpu", label: str | None = None,
                 normalisation: str = "minmax") -> Method:
    """Build the Method for a model file by its suffix; CheckpointError for anything else."""
    if normalisation not in STILL_NORMALISATIONS:
        raise DataError(f"unknown normalisation {normalisation!r}; choose from {', '.join(STILL_NORMALISATIONS)}")
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"model file not found: {p}")
    suffix = p.suffix.lower()
    label = label or p.stem
    if suffix == ".onnx":
        return onnx_method(p, label, normalisation)
    if suffix in (".pt", ".pth"):
        return torch_method(p, label, task, device, normalisation)
    raise CheckpointError(f"unknown model type {p.name}: expected {', '.join(MODEL_SUFFIXES)}")


def _unique_labels(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        n = seen.get(lab, 0)
        seen[lab] = n + 1
        out.append(lab if n == 0 else f"{lab}-{n + 1}")
    return out


def build_methods(config: QualityConfig) -> list[Method]:
    """Models first (in the order given), then baselines."""
    if not config.models and not config.baselines:
        raise DataError("nothing to evaluate: give at least one --model or --baseline")
    labels = _unique_labels([Path(m).stem for m in config.models] + [b.lower() for b in config.baselines])
    methods = [model_method(m, config.task, config.device, lab, config.normalisation)
               for m, lab in zip(config.models, labels)]
    for name, lab in zip(config.baselines, labels[len(config.models) :]):
        meth = baseline_method(name)
        meth.label = lab
        methods.append(meth)
    return methods


# ----------------------------------------------------------------------------- evaluation
def evaluate(
    config: QualityConfig,
    progress: Progress | None = None,
    methods: list[Method] | None = None,
) -> dict:
    """Run every method over the pairs and return the report dict (see module doc).

    ``progress`` gets ``start`` with the number of (pair, method) fusions, a ``step`` after each
    (``{"done": n, "total": N, "postfix": "<pair> <method>"}``) and ``close``;
    ``methods`` overrides the ones built from ``config`` (for custom fusion functions).
    """
    if config.task not in TASK_ROLES:
        raise DataError(f"unknown task {config.task!r}; choose from {', '.join(TASKS)}")
    try:
        names = tuple(M.canonical_metric(n) for n in config.metric_names())
    except ValueError as exc:
        raise DataError(str(exc)) from None
    pairs = find_pairs(config.data, config.task)
    if config.limit is not None:
        if config.limit < 1:
            raise DataError(f"--limit must be at least 1, got {config.limit}")
        pairs = pairs[: config.limit]
    if methods is None:
        methods = build_methods(config)
    results = [MethodResult(m.label, m.kind, m.source, {n: [] for n in names}) for m in methods]
    progress = progress or Progress()
    total = len(pairs) * len(methods)
    progress.start(total, 0, "quality")
    try:
        for i, pair in enumerate(pairs):
            for j, text in enumerate(_score_pair(config, pair, methods, results, names)):
                progress.step({"done": i * len(methods) + j + 1, "total": total, "postfix": text})
    finally:
        progress.close()
    return _report(config, pairs, methods, results, names)


def _score_pair(config: QualityConfig, pair: Pair, methods: list[Method], results: list[MethodResult],
                names: tuple[str, ...]) -> Iterator[str]:
    """Fuse ``pair`` with every method and add its metrics to ``results``; yields "<pair> <method>" after each."""
    img_a, img_b = read_image(pair.path_a), read_image(pair.path_b)
    try:
        bgr_a, bgr_b = check_pair(img_a, img_b)
    except SizeError as exc:
        raise SizeError(f"pair {pair.name}: {exc}") from None
    ga, gb = source_grey(bgr_a), source_grey(bgr_b)
    for meth, res in zip(methods, results):
        t0 = time.perf_counter()
        grey, bgr = meth.fuse(bgr_a, bgr_b)
        res.seconds.append(time.perf_counter() - t0)
        try:
            scores = M.compute_metrics(ga, gb, grey, names)
        except SizeError as exc:
            raise SizeError(f"pair {pair.name}, {meth.label}: {exc}") from None
        for n, v in scores.items():
            res.values[n].append(v)
        if config.save_images_to is not None:
            write_image(Path(config.save_images_to) / meth.label / f"{pair.name}.png", bgr)
        yield f"{pair.name} {meth.label}"


def _report(config: QualityConfig, pairs: list[Pair], methods: list[Method], results: list[MethodResult],
            names: tuple[str, ...]) -> dict:
    """The report dict of one evaluation (with the paper's row when ``config.paper_dataset`` is set)."""
    report = {
        "benchmark": "quality",
        "task": config.task,
        "data": str(config.data),
        "roles": list(TASK_ROLES[config.task]),
        "pairs": len(pairs),
        "limit": config.limit,
        "torch_device": config.device if any(m.kind in ("refusion", "official") for m in methods) else None,
        "metrics": list(names),
        "metric_labels": {n: M.METRICS[n][0] for n in names},
        "normalisation": config.normalisation,
        "conventions": CONVENTIONS,
        "rows": [r.row() for r in results],
        "environment": environment(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if config.paper_dataset:
        report = add_paper_row(report, config.paper_dataset)
    return report


#: Conventions of the computed metrics, stored with every report.
CONVENTIONS = {
    "images": "grey 0-255: sources by OpenCV BGR->grey (uint8), fused = the method's Y plane (uint8)",
    "EN": "Shannon entropy, 256-bin histogram, bits",
    "SD": "population standard deviation",
    "SF": "sqrt(mean(dx^2) + mean(dy^2)), first differences",
    "AG": "mean sqrt((gx^2 + gy^2)/2), np.gradient central differences",
    "SCD": "corr(F-B, A) + corr(F-A, B)",
    "SSIM": "mean of SSIM(A,F), SSIM(B,F); 7x7 uniform window, data_range 2 on 0-255 (old scikit-image float default)",
    "SSIMA": "SSIM(A,F) alone, as in SSIM (A: the task's first source, e.g. infrared)",
    "SSIMB": "SSIM(B,F) alone, as in SSIM (B: the task's second source, e.g. visible)",
    "MI": "MI(A,F) + MI(B,F), 256-bin joint histograms, bits",
    "PSNR": "10 log10(255^2 / mean(MSE(A,F), MSE(B,F)))",
    "VIF": "VIF(A,F) + VIF(B,F), pixel-domain, 4 scales, sigma_n^2 = 2",
    "QABF": "Xydeas-Petrovic, Sobel, L = 1, constants of the standard MATLAB code (max ~0.975)",
    "QCB": "Chen-Blum, DoG CSF, standard MATLAB code (images min-max stretched)",
    "QNCIE": "Wang et al. 2008, 256-bin joint histograms, log base 256 (images min-max stretched)",
    "seconds_per_image": "mean fusion time per pair (no I/O, no metrics), first pair excluded when n > 1",
}


def environment() -> dict:
    """Versions and machine facts to store with a result."""
    import sys

    env = {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }
    for mod in ("scipy", "onnxruntime", "torch"):
        m = sys.modules.get(mod)
        if m is not None:
            env[mod] = getattr(m, "__version__", "?")
    return env
