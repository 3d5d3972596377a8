"""The quality report on disk: markdown rendering and the JSON/markdown pair ``rfbench quality`` writes.

Shared by :mod:`.quality` (which builds the report) and :mod:`.paper_numbers` (which adds the
paper's row to a report already written and renders it again).
"""
from __future__ import annotations

import json
from pathlib import Path

from refusion.runtime.errors import DataError
from refusion.runtime.fsutil import atomic_write_text, check_writable


def _fmt(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}f}" if abs(x) >= 0.1 or x == 0 else f"{x:.3f}"


def report_to_markdown(report: dict) -> str:
    """A markdown table: one row per method, mean ± std per metric, seconds per image."""
    names = report["metrics"]
    labels = report.get("metric_labels", {})
    # Paper-only metrics (e.g. SCD when not computed) are not added as columns.
    head = ["method"] + [labels.get(n, n) for n in names] + ["s/image"]
    lines = [
        f"# Fusion quality: {report['task']} on {report['data']}",
        "",
        f"{report['pairs']} pairs; mean ± std over pairs; metrics on grey 0-255 images "
        "(conventions in the JSON file)."
        + (" Models' outputs are not min-max stretched (--norm none)."
           if report.get("normalisation") == "none" else ""),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
    ]
    for row in report["rows"]:
        cells = [row["method"]]
        for n in names:
            mean, std = row["mean"].get(n), row.get("std", {}).get(n)
            cells.append(_fmt(mean) if std is None else f"{_fmt(mean)} ± {_fmt(std)}")
        spi = row.get("seconds_per_image")
        cells.append("-" if spi is None else f"{spi:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    env = report.get("environment", {})
    if env:
        lines += ["", "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items())]
    return "\n".join(lines) + "\n"


def report_paths(out: str | Path, task: str, stem: str | None = None) -> tuple[Path, Path]:
    """Where :func:`write_report` writes: ``<out>/<stem>.json`` and ``.md`` (stem ``quality_<task>``)."""
    stem = stem or f"quality_{task}"
    return Path(out) / f"{stem}.json", Path(out) / f"{stem}.md"


def check_outputs(out: str | Path, task: str, save_images_to: Path | None = None, overwrite: bool = False) -> None:
    """Raise DataError before a run when it would replace existing results without ``overwrite``."""
    check_writable(out, "results folder", folder=True)
    if overwrite:
        return
    existing = [str(p) for p in report_paths(out, task) if p.exists()]
    if save_images_to is not None and Path(save_images_to).is_dir() and any(Path(save_images_to).rglob("*.png")):
        existing.append(f"images in {save_images_to}")
    if existing:
        raise DataError(f"{', '.join(existing)} already exist; pass --overwrite or choose another --out")


def write_report(report: dict, out: str | Path, overwrite: bool = False, stem: str | None = None) -> tuple[Path, Path]:
    """Write ``<out>/<stem>.json`` and ``.md`` (stem default ``quality_<task>``); returns both paths.

    Refuses to replace existing files unless ``overwrite``.
    """
    out = Path(out)
    paths = report_paths(out, report["task"], stem)
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise DataError(f"{', '.join(existing)} already exists; pass --overwrite or choose another --out")
    atomic_write_text(paths[0], json.dumps(report, indent=2) + "\n")
    atomic_write_text(paths[1], report_to_markdown(report))
    return paths
