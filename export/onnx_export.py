"""Checkpoint -> ONNX (core and colour graphs, FP32 and FP16), each checked before it is kept.

Exporter choice: the TorchScript ("legacy") exporter, ``torch.onnx.export(...,
dynamo=False, opset_version=17, dynamic_axes=...)``. On this model it exports in
about 1 s against about 14 s for the dynamo exporter, pins opset 17 (LayerNormalization,
which TensorRT 10.x on Jetson parses; the dynamo exporter emits opset 20 with a native
Gelu whose parsing on older TensorRT is unverified), and both agree with torch to
below 1e-6. The legacy exporter is deprecated but still shipped; switching is one
argument in :func:`export_graph`.

Every file is written to a temporary name, checked (ONNX checker, ONNX Runtime vs
PyTorch, FP16 lint and FP16 vs FP32), and only then renamed into place, so a failed
check leaves no file that looks valid. The FP32 graphs are finished first: an FP16
graph beyond its tolerance is refused (unless ``fp16_tolerance_levels`` accepts it)
while the FP32 graphs stay written. Messages name the final file names, never the
temporary ones.
"""
from __future__ import annotations

import hashlib
import os
import platform
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from refusion.runtime.card import ModelCard, Provenance, onnx_metadata
from refusion.runtime.errors import CheckpointError, EngineError
from refusion.runtime.progress import Progress
from refusion.runtime.size import Size


GRAPH_IO: dict[str, tuple[tuple[str, ...], tuple[str, ...], dict[str, dict[int, str]]]] = {
    "core": (
        ("a", "b"),
        ("fused",),
        {"a": {0: "N", 2: "H", 3: "W"}, "b": {0: "N", 2: "H", 3: "W"}, "fused": {0: "N", 2: "H", 3: "W"}},
    ),
    "colour": (
        ("a", "b", "norm_state"),
        ("fused", "norm_state_out"),
        {"a": {0: "H", 1: "W"}, "b": {0: "H", 1: "W"}, "fused": {0: "H", 1: "W"}},
    ),
}

#: Tolerances of the export checks (one table).
TOL = {
    "core_fp32_abs": 1e-4,  # ORT vs torch, sigmoid output in [0, 1]
    "colour_fp32_max_levels": 2,  # ORT colour graph vs train/fuse.py fuse_pair
    "colour_fp32_frac_within_1": 0.999,
    "fp16_levels": 2.0,  # FP16 vs FP32 ONNX, in 8-bit output levels (core: levels / 255 of the raw output)
}


class ExportCheckError(EngineError):
    """An exported graph does not reproduce the PyTorch model within tolerance."""


@dataclass(frozen=True)
class ExportConfig:
    """What ``rfexport MODEL`` does."""

    model: Path  # our checkpoint (*.pt) or an authors' .pth
    task: str | None = None  # needed for the authors' files (they do not store it)
    out_dir: Path | None = None  # default: beside the model
    fp16: bool = False  # also write the FP16 variants
    overwrite: bool = False
    opset: int = 17
    graphs: tuple[str, ...] = ("core", "colour")
    check_sizes: tuple[Size, ...] = (Size(120, 160), Size(97, 131))  # ORT vs torch
    fp16_check_sizes: tuple[Size, ...] = (Size(480, 640), Size(1080, 1920))  # FP16 vs FP32 in ORT
    check_images: tuple[Path, Path] | None = None  # a real pair (source a, source b); else synthetic
    training_data: str = ""  # free text for the model card (our checkpoints store their own)
    fp16_tolerance_levels: float = TOL["fp16_levels"]  # largest FP16 vs FP32 difference accepted (8-bit levels)


@dataclass
class ExportResult:
    """Written files and what the checks measured."""

    files: dict[str, Path] = field(default_factory=dict)  # e.g. "core.fp32" -> path
    checks: list[str] = field(default_factory=list)  # one human-readable line per check
    card: ModelCard | None = None


def _torch():
    from refusion.runtime._deps import require

    return require("torch", "ONNX export")


def _onnx():
    from refusion.runtime._deps import require

    return require("onnx", "ONNX export")


def _ort():
    from refusion.runtime._deps import require

    return require("onnxruntime", "checking the exported ONNX")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def output_paths(model: Path, out_dir: Path | None, fp16: bool, graphs: Sequence[str] = ("core", "colour")) -> dict[str, Path]:
    """``<stem>.onnx``, ``<stem>.colour.onnx`` (+ ``.fp16`` variants) in ``out_dir`` (default: beside the model)."""
    folder = Path(out_dir) if out_dir is not None else Path(model).parent
    stem = Path(model).stem
    names = {"core.fp32": f"{stem}.onnx", "colour.fp32": f"{stem}.colour.onnx"}
    if fp16:
        names.update({"core.fp16": f"{stem}.fp16.onnx", "colour.fp16": f"{stem}.colour.fp16.onnx"})
    return {k: folder / v for k, v in names.items() if k.split(".")[0] in graphs}


def build_card(loaded: Any, training_data: str = "") -> ModelCard:
    """The model card of a ``LoadedModel`` (refusion.train.checkpoint)."""
    from refusion.runtime.tasks import TASK_SOURCES

    torch = _torch()
    onnx = _onnx()
    task = loaded.task
    sources = TASK_SOURCES.get(task, ("a", "b")) if task else ("a", "b")
    ckpt = loaded.checkpoint or {}
    data = training_data or _describe_training(ckpt, loaded.kind, task)
    versions = {"torch": torch.__version__, "onnx": onnx.__version__, "python": platform.python_version()}
    try:
        from importlib.metadata import version

        versions["refusion"] = version("refusion")
    except Exception:  # not installed as a distribution: fine, just unknown
        pass
    return ModelCard(
        task=task,
        sources=(sources[0], sources[1]),
        model_config=loaded.net.config.to_dict(),
        provenance=Provenance(
            checkpoint_sha256=sha256_file(loaded.path),
            checkpoint_name=Path(loaded.path).name,
            kind=loaded.kind,
            training_data=data,
            versions=versions,
        ),
    )


def _describe_training(ckpt: dict, kind: str, task: str | None) -> str:
    if kind == "official":
        return f"authors' released ReFusion weights ({task or 'task not given'}); training data per the paper"
    cfg = ckpt.get("train_config") or {}
    if isinstance(cfg, dict):
        parts = [f"{k}={cfg[k]}" for k in ("data", "data_dir", "dataset", "split", "epochs") if k in cfg]
        if parts:
            return "refusion training: " + ", ".join(str(p) for p in parts)
    return "refusion training (see the checkpoint's train_config)"


def synthetic_pair(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic structured pair (uint8 BGR (h, w, 3)): warm blobs on dark (a), textured colour scene (b)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = np.full((h, w), 30.0, np.float32)
    for _ in range(5):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.05, 0.2) * min(h, w)
        a += 200.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    a += rng.normal(0, 4, (h, w))
    b = np.stack(
        [
            128 + 90 * np.sin(xx / 7.0) * np.cos(yy / 11.0),
            100 + 80 * (xx / max(w - 1, 1)),
            90 + 70 * (yy / max(h - 1, 1)) + 40 * ((xx // 9 + yy // 9) % 2),
        ],
        axis=-1,
    )
    b += rng.normal(0, 5, b.shape)
    a8 = np.clip(a, 0, 255).astype(np.uint8)
    return np.repeat(a8[..., None], 3, axis=2), np.clip(b, 0, 255).astype(np.uint8)


def check_pair(config: ExportConfig) -> tuple[np.ndarray, np.ndarray, str]:
    """The pair the checks run on (uint8 BGR), and a description of it."""
    if config.check_images is None:
        a, b = synthetic_pair(256, 320)
        return a, b, "synthetic structured pair"
    from refusion.runtime.imageio import read_image

    pa, pb = config.check_images
    a, b = read_image(pa), read_image(pb)
    return a, b, f"{Path(pa).name} + {Path(pb).name}"


def resize_pair(a: np.ndarray, b: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    return tuple(  # type: ignore[return-value]
        np.ascontiguousarray(cv2.resize(x, (w, h), interpolation=cv2.INTER_AREA)) for x in (a, b)
    )


def graph_module(net: Any, graph: str, half: bool) -> Any:
    from .graphs import ColourGraph, CoreGraph, exportable

    clone = exportable(net, half=half)
    return (CoreGraph if graph == "core" else ColourGraph)(clone, half=half).eval()


def _example_inputs(graph: str, h: int = 24, w: int = 32) -> tuple:
    """Tracing inputs; small because half convolutions on CPU are slow (the size does not matter: H, W are dynamic)."""
    torch = _torch()
    if graph == "core":
        g = torch.Generator().manual_seed(0)
        return (torch.rand(1, 1, h, w, generator=g), torch.rand(1, 1, h, w, generator=g))
    a, b = synthetic_pair(h, w)
    return (torch.from_numpy(a), torch.from_numpy(b), torch.zeros(3))


def export_graph(
    net: Any, graph: str, half: bool, path: Path, card: ModelCard, opset: int = 17, optimize: bool = True
) -> Any:
    """Trace ``net`` as ``graph`` ("core"/"colour"), write ONNX to ``path`` with metadata, run the checker.

    Returns the onnx.ModelProto written.
    """
    torch = _torch()
    onnx = _onnx()
    if opset < 17:
        raise ValueError("opset must be >= 17 (LayerNormalization)")
    module = graph_module(net, graph, half)
    inputs, outputs, dyn = GRAPH_IO[graph]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
        torch.onnx.export(
            module,
            _example_inputs(graph),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes=dyn,
            do_constant_folding=True,
        )
    model = onnx.load(str(path))
    meta = onnx_metadata(card, graph, "fp16" if half else "fp32")
    del model.metadata_props[:]
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    model.producer_name = "refusion.rfexport"
    model.doc_string = f"ReFusion {graph} graph ({'fp16' if half else 'fp32'}), task {card.task}"
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportCheckError(f"ONNX checker rejected the {graph} graph: {str(exc).splitlines()[0]}") from exc
    if optimize:  # exact rewrites; FP16 graphs get the subset that helps TensorRT (export/optimize.py)
        from .optimize import VERIFY_ATOL, VERIFY_ATOL_FP16, optimize_fp16, optimize_model, verify_equal

        optimized, _ = optimize_fp16(model) if half else optimize_model(model)
        try:
            verify_equal(model, optimized, atol=VERIFY_ATOL_FP16 if half else VERIFY_ATOL)
        except EngineError as exc:
            raise ExportCheckError(f"{graph} graph: optimisation changed the numbers: {exc}") from exc
        model = optimized
    onnx.save(model, str(path))
    return model


def ort_session(path: Path) -> Any:
    ort = _ort()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def run_core(sess: Any, ya: np.ndarray, yb: np.ndarray) -> np.ndarray:
    """Core graph on two (H, W) float32 Y planes in [0, 1] -> (H, W) float32."""
    out = sess.run(["fused"], {"a": ya[None, None].astype(np.float32), "b": yb[None, None].astype(np.float32)})
    return out[0][0, 0]


def run_colour(sess: Any, a: np.ndarray, b: np.ndarray, state: Sequence[float] = (0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """Colour graph on two uint8 BGR (H, W, 3) frames -> (fused uint8 BGR, norm_state_out float32 (3,))."""
    fused, st = sess.run(
        ["fused", "norm_state_out"], {"a": a, "b": b, "norm_state": np.asarray(state, np.float32)}
    )
    return fused, st


def _y(bgr: np.ndarray) -> np.ndarray:
    from refusion.runtime.colour import luma_bgr

    return luma_bgr(bgr)


def check_core(
    path: Path, net: Any, pair: tuple[np.ndarray, np.ndarray], sizes: Sequence[Size], label: str = ""
) -> list[str]:
    """ORT core graph vs torch F at each size; raises ExportCheckError beyond ``TOL['core_fp32_abs']``.

    ``label``: the file name to put in messages (``path`` may be a temporary file).
    """
    from refusion.train.fuse import run_fusion

    label = label or path.name
    sess = ort_session(path)
    lines = []
    for h, w in sizes:
        a, b = resize_pair(*pair, h, w)
        ya, yb = _y(a), _y(b)
        ref = run_fusion(net, ya, yb)
        got = run_core(sess, ya, yb)
        err = float(np.abs(got - ref).max())
        lines.append(f"core fp32 vs torch at {h}x{w}: max |diff| {err:.2e}")
        if not np.isfinite(got).all() or err > TOL["core_fp32_abs"]:
            raise ExportCheckError(
                f"{label}: ONNX Runtime differs from PyTorch at {h}x{w} by {err:.3g} "
                f"(tolerance {TOL['core_fp32_abs']:g}); the export is wrong"
            )
    return lines


def level_stats(x: np.ndarray, y: np.ndarray) -> tuple[int, float]:
    """(max |x - y| in levels, fraction of values within 1 level) of two uint8 arrays."""
    d = np.abs(x.astype(np.int16) - y.astype(np.int16))
    return int(d.max()), float((d <= 1).mean())


def check_colour(
    path: Path, net: Any, pair: tuple[np.ndarray, np.ndarray], sizes: Sequence[Size], label: str = ""
) -> list[str]:
    """ORT colour graph (minmax state) vs train/fuse.py ``fuse_pair`` at each size, and the ema/none states."""
    from refusion.train.fuse import fuse_pair

    label = label or path.name
    sess = ort_session(path)
    lines = []
    for h, w in sizes:
        a, b = resize_pair(*pair, h, w)
        ref = fuse_pair(net, a, b, normalisation="minmax")
        got, st = run_colour(sess, a, b)
        worst, within1 = level_stats(got, ref.bgr)
        lines.append(f"colour fp32 vs fuse_pair at {h}x{w}: max {worst} levels, {100 * within1:.3f}% within 1")
        if worst > TOL["colour_fp32_max_levels"] or within1 < TOL["colour_fp32_frac_within_1"]:
            raise ExportCheckError(
                f"{label}: colour graph differs from the PyTorch pipeline at {h}x{w} "
                f"(max {worst} levels, {100 * within1:.2f}% within 1 level); the export is wrong"
            )
        lo, hi = float(ref.raw.min()), float(ref.raw.max())
        if abs(st[0] - lo) > 1e-4 or abs(st[1] - hi) > 1e-4 or st[2] != 0.0:
            raise ExportCheckError(f"{label}: norm_state_out {st} is not (min, max, 0) = ({lo}, {hi}, 0)")
        # ema state: lo' = alpha*lo + (1-alpha)*min, and 'none' = (0, 1, 1) passes the raw output through
        _, st2 = run_colour(sess, a, b, (0.2, 0.6, 0.9))
        want = (0.9 * 0.2 + 0.1 * lo, 0.9 * 0.6 + 0.1 * hi, 0.9)
        if np.abs(st2 - np.asarray(want, np.float32)).max() > 1e-4:
            raise ExportCheckError(f"{label}: ema state update {st2} != expected {want}")
        none_ref = fuse_pair(net, a, b, normalisation="none")
        got_none, _ = run_colour(sess, a, b, (0.0, 1.0, 1.0))
        worst_n, within1_n = level_stats(got_none, none_ref.bgr)
        if worst_n > TOL["colour_fp32_max_levels"] or within1_n < TOL["colour_fp32_frac_within_1"]:
            raise ExportCheckError(f"{label}: 'none' normalisation differs at {h}x{w} by {worst_n} levels")
    return lines


class Fp16ToleranceError(ExportCheckError):
    """The FP16 graph differs from the FP32 graph by more than the accepted tolerance."""

    def __init__(self, message: str, levels: float) -> None:
        super().__init__(message)
        self.levels = levels  # the measured worst difference, in 8-bit levels


def check_fp16(
    fp16_path: Path,
    fp32_path: Path,
    graph: str,
    pair: tuple[np.ndarray, np.ndarray],
    sizes: Sequence[Size],
    tolerance_levels: float = TOL["fp16_levels"],
    label: str = "",
) -> list[str]:
    """FP16 vs FP32 ONNX in ORT CPU at each (H, W): no inf/NaN, within ``tolerance_levels`` 8-bit levels.

    Core graph: raw float output in [0, 1], compared as |diff| * 255; colour graph: uint8
    BGR output. Raises Fp16ToleranceError saying by how much, at which size and where
    (row, column[, channel]) the worst difference is.
    """
    label = label or fp16_path.name
    s16, s32 = ort_session(fp16_path), ort_session(fp32_path)
    lines = []
    for h, w in sizes:
        a, b = resize_pair(*pair, h, w)
        if graph == "core":
            ya, yb = _y(a), _y(b)
            got, ref = run_core(s16, ya, yb), run_core(s32, ya, yb)
            finite = bool(np.isfinite(got).all())
            diff = np.abs(got.astype(np.float64) - ref) * 255.0
            levels = float(np.nanmax(diff)) if finite else float("inf")
            lines.append(f"core fp16 vs fp32 at {h}x{w}: max |diff| {levels / 255.0:.2e} ({levels:.2f} levels)")
        else:
            (got, st16), (ref, st32) = run_colour(s16, a, b), run_colour(s32, a, b)
            diff = np.abs(got.astype(np.int16) - ref.astype(np.int16)).astype(np.float64)
            finite = bool(np.isfinite(st16).all())
            levels = float(diff.max()) if finite else float("inf")
            within1 = float((diff <= 1).mean())
            lines.append(f"colour fp16 vs fp32 at {h}x{w}: max {levels:.0f} levels, {100 * within1:.3f}% within 1")
        if not finite or levels > tolerance_levels:
            where = "non-finite output" if not finite else "at (row, column" + (", channel" if diff.ndim == 3 else "") + \
                ") " + str(tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape)))
            raise Fp16ToleranceError(
                f"{label}: the FP16 {graph} graph differs from FP32 by {levels:.2f} levels (out of 255) at {h}x{w}, "
                f"{where}; tolerance {tolerance_levels:g} levels",
                levels,
            )
    return lines


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def export_model(config: ExportConfig, progress: Progress | None = None) -> ExportResult:
    """Export the model of ``config`` to checked ONNX files; returns what was written and measured.

    Raises CheckpointError for a model file we cannot read (or an authors' file
    without ``task``), EngineError for existing outputs without ``overwrite``,
    ExportCheckError when a check fails (nothing is left under the final names then).
    What it does goes to ``progress`` as messages.
    """
    from refusion.runtime.tasks import TASKS
    from refusion.train.checkpoint import load_fusion_model

    say = (progress or Progress()).message
    model = Path(config.model)
    paths = _checked_outputs(config, model)
    loaded = load_fusion_model(model, config.task)
    if loaded.kind == "official" and loaded.task is None:
        raise CheckpointError(f"{model} is an authors' .pth, which does not store its task: pass --task ({', '.join(TASKS)})")
    net = loaded.net
    card = build_card(loaded, config.training_data)
    pair = check_pair(config)
    say(f"model: {model.name} ({loaded.kind}, task {loaded.task}); checks on {pair[2]}")
    result = ExportResult(card=card)
    tmp = {k: _tmp_path(p) for k, p in paths.items()}
    fp32_keys = [k for k in tmp if k.endswith(".fp32")]
    fp16_keys = [k for k in tmp if k.endswith(".fp16")]
    try:
        for key in fp32_keys:  # FP32 first: written even when an FP16 graph is refused
            result.checks.extend(_export_fp32(net, key, tmp[key], paths[key].name, card, config, pair[:2], say))
        _publish(fp32_keys, tmp, paths, result)
        for key in fp16_keys:
            result.checks.extend(_export_fp16(net, key, tmp[key], paths, card, config, pair[:2], say, result.files))
        _publish(fp16_keys, tmp, paths, result)
    finally:
        for path in tmp.values():
            path.unlink(missing_ok=True)
    return result


def _checked_outputs(config: ExportConfig, model: Path) -> dict[str, Path]:
    """The output paths of ``config`` (key "graph.precision"), after checking the request; nothing is written."""
    from refusion.runtime.tasks import TASKS

    if model.suffix.lower() in (".onnx", ".plan", ".engine"):
        raise CheckpointError(
            f"{model}: expected our checkpoint (*.pt) or an authors' ReFusion state_dict (*.pth); "
            "to build a TensorRT engine from an ONNX file use: rfexport engine MODEL.onnx"
        )
    if config.task is not None and config.task not in TASKS:
        raise CheckpointError(f"unknown task {config.task!r}; choose from {', '.join(TASKS)}")
    unknown = [g for g in config.graphs if g not in GRAPH_IO]
    if unknown:
        raise ValueError(f"unknown graph(s) {unknown}; choose from {tuple(GRAPH_IO)}")
    paths = output_paths(model, config.out_dir, config.fp16, config.graphs)
    existing = [p for p in paths.values() if p.exists()]
    if existing and not config.overwrite:
        raise EngineError(f"{', '.join(str(p) for p in existing)} already exist(s); pass --overwrite to replace")
    from .tensorrt_build import check_writable

    check_writable(next(iter(paths.values())).parent)  # before any work
    return paths


def _export_fp32(net: Any, key: str, tmp: Path, name: str, card: ModelCard, config: ExportConfig,
                 pair: tuple[np.ndarray, np.ndarray], say: Callable[[str], None]) -> list[str]:
    """Export one FP32 graph to ``tmp`` and check it against torch; the check lines (also said)."""
    graph = key.split(".")[0]
    export_graph(net, graph, False, tmp, card, config.opset)
    say(f"exported {name}")
    check = check_core if graph == "core" else check_colour
    lines = check(tmp, net, pair, config.check_sizes, label=name)
    for line in lines:
        say(line)
    return lines


def _export_fp16(net: Any, key: str, tmp: Path, paths: dict[str, Path], card: ModelCard, config: ExportConfig,
                 pair: tuple[np.ndarray, np.ndarray], say: Callable[[str], None], written: dict[str, Path]) -> list[str]:
    """Export one FP16 graph to ``tmp``, lint it and check it against its FP32 graph; the check lines (also said).

    Fp16ToleranceError names the FP32 graphs already ``written`` and the --fp16-tolerance that would accept it.
    """
    from .fp16 import lint_fp16

    graph = key.split(".")[0]
    export_graph(net, graph, True, tmp, card, config.opset)
    say(f"exported {paths[key].name}")
    problems = lint_fp16(_onnx().load(str(tmp)), graph)
    if problems:
        raise ExportCheckError(f"{paths[key].name} fails the FP16 lint: " + "; ".join(problems))
    lines = [f"{graph} fp16 lint: every reduction over H*W is float32"]
    try:
        lines += check_fp16(
            tmp, paths[f"{graph}.fp32"], graph, pair, config.fp16_check_sizes,
            config.fp16_tolerance_levels, label=paths[key].name,
        )
    except Fp16ToleranceError as exc:
        done = ", ".join(str(p) for p in written.values())
        raise Fp16ToleranceError(
            f"{exc}. FP16 graphs refused; the FP32 graphs were written ({done}). To accept this FP16 "
            f"graph anyway, rerun with --fp16-tolerance {int(np.ceil(exc.levels)) if np.isfinite(exc.levels) else 'N'}",
            exc.levels,
        ) from None
    for line in lines:
        say(line)
    return lines


def _publish(keys: list[str], tmp: dict[str, Path], paths: dict[str, Path], result: ExportResult) -> None:
    """Move the checked temporary files of ``keys`` to their final names."""
    for key in keys:
        os.replace(tmp[key], paths[key])
        result.files[key] = paths[key]
