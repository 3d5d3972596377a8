"""Learning curves: score a run's ``minutes_NNN.pt`` snapshots on a fixed validation split.

``rftrain --snapshot-minutes 10,20,40,60`` keeps the state of a run after that much training
time. :func:`curve_report` fuses the same pairs with every snapshot of every run given, and
with the classical baselines, through :func:`refusion.benchmarks.quality.evaluate` (the same
metrics and conventions as ``rfbench quality``); :func:`render_curve` draws one small chart
per metric (x: minutes of training, one line per run, baselines as dashed levels).
"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
import cv2
import numpy as np

from refusion.runtime.errors import DataError
from refusion.runtime.progress import Progress

from .quality import QualityConfig, baseline_method, evaluate, model_method

SNAPSHOT = re.compile(r"minutes_(\d+)\.pt")

#: BGR line colours of the runs, in order.
COLOURS = ((200, 90, 30), (40, 140, 40), (30, 30, 200), (150, 60, 150), (0, 140, 200), (90, 90, 90))


def snapshots(run: Path) -> list[tuple[int, Path]]:
    """(minutes, path) of every ``minutes_NNN.pt`` in a run folder, by minutes; DataError when none."""
    found = sorted((int(m.group(1)), p) for p in Path(run).glob("minutes_*.pt") if (m := SNAPSHOT.fullmatch(p.name)))
    if not found:
        raise DataError(f"{run} holds no minutes_NNN.pt snapshots: train with --snapshot-minutes 10,20,40,60")
    return found


def curve_report(config: QualityConfig, runs: list[Path],
                 progress: Progress | None = None) -> dict:
    """The quality report of every snapshot (label ``RUN@Nmin``) and baseline, plus a ``curve``
    entry: per run, the minutes and each metric's mean at those minutes."""
    names = [Path(r).name for r in runs]
    if len(set(names)) != len(names):
        names = [str(r) for r in runs]
    methods, points = [], []
    for run, name in zip(runs, names):
        for minutes, path in snapshots(run):
            label = f"{name}@{minutes}min"
            methods.append(model_method(path, config.task, config.device, label))
            points.append((name, minutes, label))
    for b in config.baselines:
        meth = baseline_method(b)
        meth.label = b
        methods.append(meth)
    report = evaluate(replace(config, models=(), baselines=()), progress, methods)
    rows = {r["method"]: r for r in report["rows"]}
    curve: dict[str, dict] = {}
    for name, minutes, label in points:
        entry = curve.setdefault(name, {"minutes": [], **{m: [] for m in report["metrics"]}})
        entry["minutes"].append(minutes)
        for m in report["metrics"]:
            entry[m].append(rows[label]["mean"][m])
    report["benchmark"] = "learning_curve"
    report["curve"] = curve
    report["baseline_levels"] = {b: rows[b]["mean"] for b in config.baselines}
    return report


def render_curve(report: dict, panel: tuple[int, int] = (240, 340)) -> np.ndarray:
    """A BGR uint8 picture: one chart per metric, 4 per row; returns (H, W, 3)."""
    metrics = report["metrics"]
    ph, pw = panel
    cols = min(4, len(metrics))
    rows = -(-len(metrics) // cols)
    legend_h = 28 * (len(report["curve"]) + len(report["baseline_levels"])) + 10
    canvas = np.full((rows * ph + legend_h, cols * pw, 3), 255, np.uint8)
    labels = report.get("metric_labels", {})
    for i, m in enumerate(metrics):
        _chart(canvas[(i // cols) * ph:(i // cols + 1) * ph, (i % cols) * pw:(i % cols + 1) * pw],
               report, m, labels.get(m, m))
    y = rows * ph + 22
    for k, name in enumerate(report["curve"]):
        colour = COLOURS[k % len(COLOURS)]
        cv2.line(canvas, (12, y - 6), (52, y - 6), colour, 2)
        cv2.putText(canvas, name, (60, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        y += 28
    for name in report["baseline_levels"]:
        _dashed(canvas, (12, y - 6), (52, y - 6), _grey_of(name, report))
        cv2.putText(canvas, f"{name} (baseline)", (60, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        y += 28
    return canvas


def _grey_of(name: str, report: dict) -> tuple[int, int, int]:
    k = list(report["baseline_levels"]).index(name)
    g = 60 + 50 * (k % 3)
    return (g, g, g)


def _dashed(img: np.ndarray, p0: tuple[int, int], p1: tuple[int, int], colour, dash: int = 6) -> None:
    (x0, y0), (x1, y1) = p0, p1
    n = max(1, int(np.hypot(x1 - x0, y1 - y0) // dash))
    for j in range(0, n, 2):
        a, b = j / n, min(1.0, (j + 1) / n)
        cv2.line(img, (int(x0 + a * (x1 - x0)), int(y0 + a * (y1 - y0))),
                 (int(x0 + b * (x1 - x0)), int(y0 + b * (y1 - y0))), colour, 1)


def _chart(img: np.ndarray, report: dict, metric: str, title: str) -> None:
    h, w = img.shape[:2]
    left, right, top, bottom = 48, 12, 26, 30
    series = [(v["minutes"], v[metric]) for v in report["curve"].values()]
    levels = [lv[metric] for lv in report["baseline_levels"].values() if lv.get(metric) is not None]
    xs = [x for s in series for x in s[0]] or [0]
    ys = [y for s in series for y in s[1] if y is not None] + levels or [0.0]
    x_hi = max(xs) or 1
    y_lo, y_hi = min(ys), max(ys)
    pad = 0.08 * (y_hi - y_lo) if y_hi > y_lo else 0.5 * (abs(y_hi) or 1.0)
    y_lo, y_hi = y_lo - pad, y_hi + pad

    def pt(x: float, y: float) -> tuple[int, int]:
        return (int(left + x / x_hi * (w - left - right)), int(top + (y_hi - y) / (y_hi - y_lo) * (h - top - bottom)))

    cv2.rectangle(img, (left, top), (w - right, h - bottom), (180, 180, 180), 1)
    cv2.putText(img, title, (left, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    for frac in (0.0, 0.5, 1.0):
        y = y_lo + pad + frac * (y_hi - y_lo - 2 * pad)
        cv2.putText(img, f"{y:.2f}", (2, pt(0, y)[1] + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (60, 60, 60), 1, cv2.LINE_AA)
    for x in sorted(set(xs)):
        cv2.putText(img, str(x), (pt(x, y_lo)[0] - 8, h - bottom + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.38,
                    (60, 60, 60), 1, cv2.LINE_AA)
    cv2.putText(img, "minutes", (w - right - 60, h - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (60, 60, 60), 1, cv2.LINE_AA)
    for name, level in zip(report["baseline_levels"], levels):
        _dashed(img, pt(0, level), pt(x_hi, level), _grey_of(name, report))
        cv2.putText(img, name, (left + 3, pt(0, level)[1] - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                    _grey_of(name, report), 1, cv2.LINE_AA)
    for k, (mx, my) in enumerate(series):
        colour = COLOURS[k % len(COLOURS)]
        pts = [pt(x, y) for x, y in zip(mx, my) if y is not None]
        for a, b in zip(pts, pts[1:]):
            cv2.line(img, a, b, colour, 2, cv2.LINE_AA)
        for p in pts:
            cv2.circle(img, p, 3, colour, -1, cv2.LINE_AA)


def curve_to_markdown(report: dict) -> str:
    """One table: rows = run@minutes and baselines, columns = metrics."""
    metrics = report["metrics"]
    labels = report.get("metric_labels", {})
    lines = [f"# Learning curve: {report['task']} on {report['data']} ({report['pairs']} pairs)", "",
             "Mean over the pairs; metrics and conventions as rfbench quality.", "",
             "| run | minutes | " + " | ".join(labels.get(m, m) for m in metrics) + " |",
             "|---|---:|" + "---:|" * len(metrics)]
    for name, entry in report["curve"].items():
        for i, minutes in enumerate(entry["minutes"]):
            cells = [f"{entry[m][i]:.3f}" if entry[m][i] is not None else "-" for m in metrics]
            lines.append(f"| {name} | {minutes} | " + " | ".join(cells) + " |")
    for name, level in report["baseline_levels"].items():
        cells = [f"{level[m]:.3f}" if level.get(m) is not None else "-" for m in metrics]
        lines.append(f"| {name} (baseline) | - | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
