"""``rfbench quality``: fusion-quality table for models and classical baselines."""
from __future__ import annotations

from pathlib import Path

import click

from refusion.runtime.clitools import HELP_SETTINGS, friendly_errors, setup_logging
from refusion.runtime.colour import STILL_NORMALISATIONS
from refusion.runtime.errors import DataError
from refusion.runtime.progress import TqdmProgress

from .baselines import BASELINES
from refusion.runtime.metrics import METRICS, canonical_metric
from .paper_numbers import PAPER_NUMBERS, canonical_dataset, guess_dataset
from .quality import TASKS, QualityConfig, evaluate
from .quality_report import check_outputs, report_to_markdown, write_report


def _parse_metrics(values: tuple[str, ...]) -> tuple[str, ...]:
    names: list[str] = []
    for v in values:
        for part in v.split(","):
            if part.strip():
                try:
                    key = canonical_metric(part)
                except ValueError as exc:
                    raise click.BadParameter(str(exc), param_hint="--metrics") from None
                if key not in names:
                    names.append(key)
    return tuple(names)


@click.command("quality", context_settings=dict(HELP_SETTINGS))
@click.option("--task", required=True, type=click.Choice(TASKS, case_sensitive=False), help="Fusion task.")
@click.option(
    "--data",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Split folder with the two role folders (ivif: ir, vis; mif: a, b; mfif: near, far; meif: under, over); "
    "pairs are matched by file name.",
)
@click.option(
    "--model",
    "models",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Model to evaluate (repeatable): refusion checkpoint .pt, authors' .pth, or ONNX core graph .onnx.",
)
@click.option(
    "--baseline",
    "baselines",
    multiple=True,
    type=click.Choice(sorted(BASELINES), case_sensitive=False),
    help="Classical baseline to evaluate (repeatable).",
)
@click.option(
    "--metrics",
    "metric_opts",
    multiple=True,
    help="Metrics, comma-separated or repeated, from: "
    + ", ".join(METRICS)
    + ". Default: ivif/mif EN SD SF AG SCD SSIM QABF; mfif/meif EN SD SF VIF QCB QNCIE.",
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate only the first N pairs.")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=True, file_okay=False),
    default=Path("rfbench-quality"),
    show_default=True,
    help="Folder for quality_<task>.json/.md (and images/ with --save-images).",
)
@click.option("--save-images", is_flag=True, help="Also save the fused colour images under OUT/images/<method>/.")
@click.option(
    "--paper",
    type=click.Choice(["auto", *PAPER_NUMBERS], case_sensitive=False),
    default=None,
    help="Add ReFusion's published numbers for this dataset as a row ('auto': guess from --data).",
)
@click.option("--device", default="cpu", show_default=True, help="torch device for .pt/.pth models.")
@click.option(
    "--norm",
    "normalisation",
    type=click.Choice(STILL_NORMALISATIONS),
    default="minmax",
    show_default=True,
    help="How models' sigmoid output becomes the image: per-image min-max stretch (the authors' stills) or none "
    "(as rfrun --norm none). Baselines are never stretched.",
)
@click.option("--overwrite", is_flag=True, help="Replace existing result files in OUT.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("-v", "--verbose", count=True, help="More logging (-v, -vv).")
@friendly_errors
def quality(
    task: str,
    data: Path,
    models: tuple[Path, ...],
    baselines: tuple[str, ...],
    metric_opts: tuple[str, ...],
    limit: int | None,
    out: Path,
    save_images: bool,
    paper: str | None,
    device: str,
    normalisation: str,
    overwrite: bool,
    no_progress: bool,
    verbose: int,
) -> None:
    """Fuse a test split with models and baselines and tabulate quality metrics."""
    setup_logging(verbose)
    task = task.lower()
    paper_dataset = None
    if paper is not None:
        paper_dataset = guess_dataset(data) if paper.lower() == "auto" else canonical_dataset(paper)
        if paper_dataset is None:
            raise DataError(f"cannot tell the dataset from {data}; name it: --paper {'|'.join(PAPER_NUMBERS)}")
    config = QualityConfig(
        task=task,
        data=data,
        models=tuple(models),
        baselines=tuple(b.lower() for b in baselines),
        metrics=_parse_metrics(metric_opts),
        limit=limit,
        save_images_to=out / "images" if save_images else None,
        paper_dataset=paper_dataset,
        device=device,
        normalisation=normalisation,
    )
    check_outputs(out, task, config.save_images_to, overwrite)

    report = evaluate(config, TqdmProgress(quiet=no_progress, unit="img", leave=False, delay=1.0))
    json_path, md_path = write_report(report, out, overwrite=overwrite)
    click.echo(report_to_markdown(report))
    click.echo(f"wrote {json_path} and {md_path}")
