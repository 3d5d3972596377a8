"""Speed and fidelity of ``rfrun --infer-size`` (network at a lower resolution) against full resolution.

One run, one process, one input pair: the full-resolution path (the colour graph on the
frames as they are) and each inference size (:class:`refusion.runtime.upsample.LowResFusion`:
INTER_AREA downscale, the colour graph, fused luma upsampled, full-resolution Eq. 15 chroma)
are timed in interleaved repetitions (the order rotates each repetition, so a change of
machine load hits every variant alike); medians per variant and per stage (``prepare`` =
downscale, ``infer`` = colour graph, ``post`` = upsampling and colour work). Fidelity of each
low-resolution output against the full-resolution output: PSNR over the B, G, R channels,
PSNR of the luma, max abs difference (uint8 levels), and SF / AG
(:mod:`refusion.runtime.metrics`) of the luma of both.

Run::

    python -m refusion.benchmarks.infer_size --sizes 240x320,360x480 --repeats 7

Sizes are given as HxW, as in every refusion command (``rfrun --infer-size 240x320``).
"""
from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from refusion.runtime.fsutil import atomic_write_text
from refusion.runtime.pipeline import DEFAULT_MODEL, Fuser
from refusion.runtime.progress import CallbackProgress, Progress
from refusion.runtime.size import Size
from refusion.runtime.upsample import LowResFusion, check_infer_size

RESULTS = Path(__file__).resolve().parent / "results"
_SHARED = Path(os.environ.get("REFUSION_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
DEFAULT_PAIR = (str(_SHARED / "data/ivif/MSRS/test/ir/00004N.png"), str(_SHARED / "data/ivif/MSRS/test/vis/00004N.png"))


@dataclass(frozen=True)
class InferSizeConfig:
    ir: Path = Path(DEFAULT_PAIR[0])  # source a
    vis: Path = Path(DEFAULT_PAIR[1])  # source b
    model: Path = DEFAULT_MODEL  # colour ONNX
    sizes: tuple[Size, ...] = (Size(240, 320), Size(360, 480))  # inference sizes
    repeats: int = 7  # timed repetitions per variant (median reported)
    warmup: int = 1  # untimed runs per variant first
    interpolation: str = "cubic"  # luma upsampling
    normalisation: str = "minmax"  # as rfrun on a still pair
    backend: str = "ort-cpu"
    out_dir: Path = RESULTS
    command: str = ""  # recorded in the report
    extra: dict[str, Any] = field(default_factory=dict)


def _psnr(x: np.ndarray, y: np.ndarray) -> float:
    mse = float(np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def _luma(img: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(img, cv2.COLOR_BGR2YCrCb)[..., 0]


Variant = tuple[str, LowResFusion | None]  # (name, None = full resolution, else the low-resolution stage)
STAGES = ("total", "prepare", "infer", "post")


def run_infer_size(config: InferSizeConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Measure; returns the report dict (see :func:`write_report`); repetitions go to ``progress`` as messages."""
    say = (progress or Progress()).message
    from refusion.benchmarks.latency_env import host_info, versions
    from refusion.runtime.backends import open_backend

    a, b = _read_pair(config)
    frame_hw = a.shape[:2]
    host = host_info()
    variants = _variants(config)
    with open_backend(config.model, config.backend) as be:
        fuser = Fuser(be, config.normalisation)
        times, outputs = _time_variants(config, fuser, variants, a, b, say)
        backend_desc = be.describe()
        by_interp = _by_interpolation(fuser, variants, a, b, outputs["full"])
    host["loadavg_end"] = list(os.getloadavg())
    rows = [_row(name, low, times[name], outputs, frame_hw, by_interp) for name, low in variants]
    base = rows[0]["median_ms"]
    for row in rows:
        row["speedup"] = round(base / row["median_ms"], 2)
    return {
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": config.command,
        "host": host,
        "versions": versions(),
        "backend": backend_desc,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "frame_hw": list(frame_hw),
        "rows": rows,
    }


def _read_pair(config: InferSizeConfig) -> tuple[np.ndarray, np.ndarray]:
    """The pair, uint8 (H, W, 3) BGR; ValueError / SizeError when it or an inference size does not fit."""
    from refusion.runtime.imageio import read_image

    a, b = read_image(config.ir), read_image(config.vis)
    if a.shape != b.shape:
        raise ValueError(f"the pair differs in size: {a.shape} vs {b.shape}")
    for size in config.sizes:
        check_infer_size(Size(*size), Size.of(a))
    return a, b


def _variants(config: InferSizeConfig) -> list[Variant]:
    return [("full", None)] + [(f"{Size(*s)}", LowResFusion(Size(*s), config.interpolation)) for s in config.sizes]


def _once(fuser: Fuser, low: LowResFusion | None, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """One frame through ``low`` (or at full resolution); the output and the seconds per :data:`STAGES`."""
    fuser.reset()
    t0 = time.perf_counter()
    na, nb = low.prepare(a, b) if low is not None else (a, b)
    t1 = time.perf_counter()
    fused = fuser(na, nb)
    t2 = time.perf_counter()
    out = low.finish(fused, na, nb, a, b) if low is not None else fused
    t3 = time.perf_counter()
    return out, [t3 - t0, t1 - t0, t2 - t1, t3 - t2]


def _time_variants(config: InferSizeConfig, fuser: Fuser, variants: list[Variant], a: np.ndarray, b: np.ndarray,
                   say: Callable[[str], None]) -> tuple[dict[str, dict[str, list[float]]], dict[str, np.ndarray]]:
    """Warm up, then time every variant in interleaved, rotating repetitions; (times, last outputs) by name."""
    times: dict[str, dict[str, list[float]]] = {n: {k: [] for k in STAGES} for n, _ in variants}
    outputs: dict[str, np.ndarray] = {}
    for name, low in variants:
        for _ in range(config.warmup):
            outputs[name] = _once(fuser, low, a, b)[0]
    say(f"backend {fuser.backend.describe()}; frame {Size.of(a)} (HxW); {config.repeats} interleaved repetitions")
    for r in range(config.repeats):
        k = r % len(variants)
        for name, low in variants[k:] + variants[:k]:
            out, t = _once(fuser, low, a, b)
            for key, v in zip(STAGES, t):
                times[name][key].append(v)
            outputs[name] = out
        last = ", ".join(f"{n} {times[n]['total'][-1] * 1e3:.0f} ms" for n, _ in variants)
        say(f"repetition {r + 1}/{config.repeats}: {last}")
    return times, outputs


def _by_interpolation(fuser: Fuser, variants: list[Variant], a: np.ndarray, b: np.ndarray,
                      full: np.ndarray) -> dict[str, dict[str, dict[str, float]]]:
    """Luma upsampling choice: both interpolations on the same low-resolution fused frame, against ``full``."""
    by_interp: dict[str, dict[str, dict[str, float]]] = {}
    for name, low in variants[1:]:
        na, nb = low.prepare(a, b)
        fuser.reset()
        fused = fuser(na, nb)
        by_interp[name] = {}
        for interp in ("linear", "cubic"):
            out = LowResFusion(low.size, interp).finish(fused, na, nb, a, b)
            by_interp[name][interp] = {
                "psnr_bgr_db": round(_psnr(out, full), 2),
                "psnr_luma_db": round(_psnr(_luma(out), _luma(full)), 2),
                "max_abs_diff": int(np.abs(out.astype(np.int16) - full).max()),
            }
    return by_interp


def _row(name: str, low: LowResFusion | None, t: dict[str, list[float]], outputs: dict[str, np.ndarray],
         frame_hw: tuple[int, ...], by_interp: dict[str, Any]) -> dict[str, Any]:
    """One variant's report row: times (ms), fidelity against the full-resolution output, SF / AG of the luma."""
    from refusion.runtime.metrics import average_gradient, spatial_frequency

    full = outputs["full"]
    y = _luma(outputs[name])
    return {
        "variant": name,
        "infer_size_hw": list(frame_hw) if low is None else list(low.size),
        "median_ms": round(statistics.median(t["total"]) * 1e3, 1),
        "min_ms": round(min(t["total"]) * 1e3, 1),
        "max_ms": round(max(t["total"]) * 1e3, 1),
        "stage_median_ms": {k: round(statistics.median(v) * 1e3, 2) for k, v in t.items() if k != "total"},
        "samples_ms": [round(v * 1e3, 1) for v in t["total"]],
        "psnr_bgr_db": None if low is None else round(_psnr(outputs[name], full), 2),
        "psnr_luma_db": None if low is None else round(_psnr(y, _luma(full)), 2),
        "max_abs_diff": int(np.abs(outputs[name].astype(np.int16) - full).max()),
        "sf": round(spatial_frequency(y), 3),
        "ag": round(average_gradient(y), 3),
        "by_interpolation": by_interp.get(name),
    }


def result_stem(report: dict[str, Any]) -> str:
    from refusion.benchmarks.latency_report import slug as _slug

    host = report["host"]
    device = _slug(host["cpu_model"].split("@")[0]) + f"-{host['physical_cores']}c"
    return f"infer_size_{device}_ort{report['versions'].get('onnxruntime')}"


def format_markdown(report: dict[str, Any]) -> str:
    host, cfg = report["host"], report["config"]
    h, w = report["frame_hw"]
    lines = [
        f"# rfrun --infer-size: {host['cpu_model']}",
        "",
        f"- command: `{report['command']}`",
        f"- created {report['created']}; backend {report['backend']}; model `{Path(cfg['model']).name}`",
        f"- CPU: {host['cpu_model']} ({host['physical_cores']} physical cores, {host['logical_cpus']} logical)",
        f"- load average (1, 5, 15 min) at start {[round(v, 2) for v in host['loadavg_start']]}, "
        f"at end {[round(v, 2) for v in host['loadavg_end']]} (machine shared with other jobs)",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v),
        f"- pair: `{cfg['ir']}` + `{cfg['vis']}` ({h}x{w}, HxW); normalisation {cfg['normalisation']}; "
        f"luma upsampling {cfg['interpolation']}",
        f"- {cfg['repeats']} timed repetitions per variant after {cfg['warmup']} warm-up, interleaved "
        "(order rotated each repetition); time = whole frame (downscale + colour graph + upsampling/colour work)",
        "- fidelity against the full-resolution output of the same run: PSNR over B, G, R and over the luma "
        "(uint8), max abs difference (levels); SF / AG (refusion.runtime.metrics) of the luma",
        "",
        "| variant (HxW) | rfrun option | median ms | min ms | max ms | speed-up | prepare ms | infer ms | post ms "
        "| PSNR BGR dB | PSNR Y dB | max abs diff | SF | AG |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        ih, iw = r["infer_size_hw"]
        opt = "" if r["variant"] == "full" else f"`--infer-size {ih}x{iw}`"
        s = r["stage_median_ms"]
        psnr_b = "-" if r["psnr_bgr_db"] is None else f"{r['psnr_bgr_db']:.2f}"
        psnr_y = "-" if r["psnr_luma_db"] is None else f"{r['psnr_luma_db']:.2f}"
        lines.append(
            f"| {r['variant']} | {opt} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | {r['max_ms']:.1f} | "
            f"{r['speedup']:.2f} | {s['prepare']:.2f} | {s['infer']:.1f} | {s['post']:.2f} | {psnr_b} | {psnr_y} | "
            f"{r['max_abs_diff']} | {r['sf']:.2f} | {r['ag']:.2f} |"
        )
    lines += [
        "",
        "Luma upsampling, both on the same low-resolution fused frame (against the full-resolution output):",
        "",
        "| variant (HxW) | interpolation | PSNR BGR dB | PSNR Y dB | max abs diff |",
        "|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        for interp, m in (r.get("by_interpolation") or {}).items():
            lines.append(f"| {r['variant']} | {interp} | {m['psnr_bgr_db']:.2f} | {m['psnr_luma_db']:.2f} | "
                         f"{m['max_abs_diff']} |")
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out_dir: Path, notes: str = "") -> tuple[Path, Path]:
    stem = result_stem(report)
    md, js = out_dir / f"{stem}.md", out_dir / f"{stem}.json"
    atomic_write_text(md, format_markdown(report) + (f"\n{notes}\n" if notes else ""))  # atomic: parents made
    atomic_write_text(js, json.dumps(report, indent=2) + "\n")
    return md, js


def main(argv: list[str] | None = None) -> None:
    import shlex
    import sys

    import click

    def hw(text: str) -> tuple[Size, ...]:
        return tuple(Size(*(int(v) for v in s.lower().split("x"))) for s in text.split(","))

    @click.command()
    @click.option("--ir", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=DEFAULT_PAIR[0])
    @click.option("--vis", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=DEFAULT_PAIR[1])
    @click.option("-m", "--model", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=DEFAULT_MODEL)
    @click.option("--sizes", default="240x320,360x480", show_default=True,
                  help="inference sizes, HxW, comma-separated.")
    @click.option("--repeats", type=click.IntRange(min=1), default=7, show_default=True)
    @click.option("--interpolation", type=click.Choice(["linear", "cubic"]), default="cubic", show_default=True)
    @click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=RESULTS, show_default=True)
    def cli(ir, vis, model, sizes, repeats, interpolation, out_dir):
        """Time and compare rfrun --infer-size against full resolution on one pair."""
        try:
            parsed = hw(sizes)
        except ValueError:
            raise click.BadParameter(f"{sizes!r}: give sizes like 240x320,360x480 (HxW)", param_hint="--sizes")
        args = " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
        command = f"python -m refusion.benchmarks.infer_size {args}"
        config = InferSizeConfig(ir=ir, vis=vis, model=model, sizes=parsed, repeats=repeats,
                                 interpolation=interpolation, out_dir=out_dir, command=command.strip())
        report = run_infer_size(config, CallbackProgress(lambda text: click.echo(text, err=True)))
        md, js = write_report(report, out_dir)
        click.echo(format_markdown(report))
        click.echo(f"wrote {md} and {js}")

    cli.main(args=argv, prog_name="python -m refusion.benchmarks.infer_size", standalone_mode=True)


if __name__ == "__main__":
    main()
