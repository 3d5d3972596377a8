"""``rfbench train``: seconds per meta step and per fusion & reconstruction step."""
from __future__ import annotations

import click

from refusion.runtime.clitools import HELP_SETTINGS, friendly_errors

from .results_io import DEFAULT_RESULTS_DIR, check_results_dir


@click.command("train", context_settings=dict(HELP_SETTINGS))
@click.option("--batch", default=4, show_default=True, help="Images per batch (2 pairs + swapped).")
@click.option("--size", default=128, show_default=True, help="Square crop side.")
@click.option("--repeats", default=3, show_default=True, help="Timed repetitions (median reported).")
@click.option("--warmup", default=1, show_default=True, help="Untimed warm-up repetitions.")
@click.option("--device", "devices", multiple=True, type=click.Choice(["cpu", "cuda"]),
              help="Devices to measure (repeatable; default: cpu and cuda when present).")
@click.option("--threads", default=0, show_default=True, help="CPU threads (0: torch default).")
@click.option("--out", "out_dir", default=str(DEFAULT_RESULTS_DIR), show_default=True,
              type=click.Path(file_okay=False), help="Folder for the JSON and markdown results (checked before "
              "timing starts; the committed ones live in the checkout's benchmarks/results).")
@click.option("--overwrite", is_flag=True, help="Replace a result of the same name (default: number the new one).")
@friendly_errors
def train_speed(batch: int, size: int, repeats: int, warmup: int, devices: tuple[str, ...], threads: int,
                out_dir: str, overwrite: bool) -> None:
    """Time Algorithm 1's steps (meta step = inner + outer update) on random data."""
    import json

    from .results_io import write_results
    from .train_speed import SpeedConfig, result_stem, run_benchmark, to_markdown

    check_results_dir(out_dir)
    from refusion.train.cli import passive_openmp

    passive_openmp()  # time the steps as rftrain runs them
    cfg = SpeedConfig(batch=batch, size=size, warmup=warmup, repeats=max(1, repeats),
                      devices=devices or ("cpu", "cuda"), threads=threads)
    report = run_benchmark(cfg, progress=lambda m: click.echo(m, err=True))
    jp, mp = write_results(out_dir, result_stem(report), json.dumps(report, indent=2) + "\n", to_markdown(report),
                           overwrite=overwrite)
    click.echo(to_markdown(report))
    click.echo(f"wrote {jp} and {mp}")
