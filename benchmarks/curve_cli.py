"""``rfbench curve``: learning curves of training runs from their ``minutes_NNN.pt`` snapshots."""
from __future__ import annotations

import json
from pathlib import Path

import click

from refusion.runtime.clitools import HELP_SETTINGS, friendly_errors, setup_logging

from .baselines import BASELINES
from .quality import TASKS, QualityConfig
from .results_io import DEFAULT_RESULTS_DIR, check_results_dir, free_stem, write_results


@click.command("curve", context_settings=dict(HELP_SETTINGS))
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--task", required=True, type=click.Choice(TASKS, case_sensitive=False), help="Fusion task.")
@click.option("--data", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Validation split folder with the two role folders (never the test set you report).")
@click.option("--baseline", "baselines", multiple=True, type=click.Choice(sorted(BASELINES), case_sensitive=False),
              help="Classical baseline drawn as a level (repeatable).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N pairs.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=DEFAULT_RESULTS_DIR,
              show_default=True, help="Folder for curve_<task>.json/.md/.png.")
@click.option("--device", default="cpu", show_default=True, help="torch device for the snapshots.")
@click.option("--overwrite", is_flag=True, help="Replace existing result files in OUT.")
@click.option("-v", "--verbose", count=True)
@friendly_errors
def curve(runs: tuple[Path, ...], task: str, data: Path, baselines: tuple[str, ...], limit: int | None, out: Path,
          device: str, overwrite: bool, verbose: int) -> None:
    """Score the minutes_NNN.pt snapshots of RUNS (rftrain --snapshot-minutes) on a validation split
    and draw the 7 metrics against training minutes, with baselines as levels.

    \b
    Example:
      rfbench curve runs/ivif runs/ivif2 --task ivif --data val/ --baseline average --out curves/
    """
    setup_logging(verbose)
    check_results_dir(out)
    from refusion.runtime.imageio import write_image
    from refusion.runtime.progress import TqdmProgress

    from .learning_curve import curve_report, curve_to_markdown, render_curve

    config = QualityConfig(task=task.lower(), data=data, baselines=tuple(b.lower() for b in baselines),
                           limit=limit, device=device)
    report = curve_report(config, list(runs), TqdmProgress(unit="img", leave=False, delay=1.0))
    stem = f"curve_{config.task}" if overwrite else free_stem(out, f"curve_{config.task}", (".json", ".md", ".png"))
    js, md = write_results(out, stem, json.dumps(report, indent=1), curve_to_markdown(report), overwrite=True)
    png = out / f"{stem}.png"
    write_image(png, render_curve(report))
    click.echo(curve_to_markdown(report))
    click.echo(f"wrote {js}, {md} and {png}")
