"""ReFusion's own published numbers (Bai et al., IJCV 2024, Tables 1-4), as a table row.

Values from METHOD.md section 5. Keys are the canonical metric names of
refusion.runtime.metrics. Use :func:`paper_row` to get a row for a quality
report, or ``python -m refusion.benchmarks.paper_numbers REPORT.json DATASET`` to
add the row to a report written by ``rfbench quality`` (JSON and markdown rewritten).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from refusion.runtime.errors import DataError

from .quality_report import report_to_markdown

#: dataset -> (task, {metric: value}) for ReFusion as published.
PAPER_NUMBERS: dict[str, tuple[str, dict[str, float]]] = {
    "MSRS": ("ivif", {"EN": 6.71, "SD": 42.89, "SF": 11.64, "AG": 3.80, "SCD": 1.67, "SSIM": 0.51}),
    "RoadScene": ("ivif", {"EN": 7.28, "SD": 45.65, "SF": 14.20, "AG": 5.23, "SCD": 1.70, "SSIM": 0.72}),
    "Lytro": ("mfif", {"EN": 7.56, "SD": 59.82, "SF": 18.56, "VIF": 0.95, "QCB": 0.69, "QNCIE": 0.83}),
    "MEFB": ("meif", {"EN": 7.47, "SD": 62.83, "SF": 19.01, "VIF": 0.97, "QCB": 0.47, "QNCIE": 0.83}),
}

PAPER_LABEL = "ReFusion (paper)"


def canonical_dataset(name: str) -> str:
    """'msrs' -> 'MSRS' etc.; DataError naming the choices when unknown."""
    for key in PAPER_NUMBERS:
        if key.lower() == name.strip().lower():
            return key
    raise DataError(f"no published ReFusion numbers for dataset {name!r}; known: {', '.join(PAPER_NUMBERS)}")


def guess_dataset(data_dir: str | Path) -> str | None:
    """The dataset named by a folder path such as .../ivif/MSRS/test, or None."""
    parts = {p.lower() for p in Path(data_dir).resolve().parts}
    for key in PAPER_NUMBERS:
        if key.lower() in parts:
            return key
    return None


def paper_row(dataset: str) -> dict:
    """A report row (same layout as rfbench quality's JSON rows) with the paper's numbers."""
    key = canonical_dataset(dataset)
    task, values = PAPER_NUMBERS[key]
    return {
        "method": PAPER_LABEL,
        "kind": "paper",
        "source": f"Bai et al., IJCV 2024, {key} ({task})",
        "n": None,
        "seconds_per_image": None,
        "mean": dict(values),
        "std": {},
    }


def add_paper_row(report: dict, dataset: str) -> dict:
    """Return ``report`` (a quality-report dict) with the paper row added or replaced."""
    row = paper_row(dataset)
    rows = [r for r in report.get("rows", []) if r.get("kind") != "paper"]
    return {**report, "rows": [*rows, row]}


def main(argv: list[str] | None = None) -> int:
    """``python -m refusion.benchmarks.paper_numbers REPORT.json DATASET``: add the row in place."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m refusion.benchmarks.paper_numbers REPORT.json DATASET", file=sys.stderr)
        return 2
    path = Path(args[0])
    try:
        report = add_paper_row(json.loads(path.read_text()), args[1])
    except (OSError, ValueError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    path.write_text(json.dumps(report, indent=2) + "\n")
    path.with_suffix(".md").write_text(report_to_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
