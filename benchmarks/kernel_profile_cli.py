"""``rfbench profile``: a thin click command over :func:`refusion.benchmarks.kernel_profile.profile_forward`."""
from __future__ import annotations

from pathlib import Path

import click

from refusion.runtime.clitools import HELP_SETTINGS, friendly_errors, parse_size
from refusion.runtime.progress import CallbackProgress


@click.command("profile", context_settings=dict(HELP_SETTINGS))
@click.option("--model", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="Our checkpoint (*.pt) or an authors' ReFusion .pth.")
@click.option("--task", default=None, help="Task of an authors' .pth (e.g. ivif).")
@click.option("--size", default="480x640", show_default=True, help="Frame size HxW of the profiled forward.")
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default="cuda", show_default=True)
@click.option("--precision", "precisions", multiple=True, type=click.Choice(["fp32", "fp16"]),
              default=("fp32", "fp16"), show_default=True, help="Repeatable; fp16 keeps the float32 islands.")
@click.option("--rows", type=click.IntRange(1, 500), default=25, show_default=True, help="Rows per table.")
@click.option("--candidates/--no-candidates", default=True, show_default=True,
              help="Also time candidate rewrites of the suspect ops (q k^T, L2 norm, ChannelNorm, convolutions).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the text report here (and the JSON beside it); default: print only.")
@friendly_errors
def profile(model, task, size, device, precisions, rows, candidates, out) -> None:
    """Top device kernels and aten ops of one forward of F (torch.profiler), per precision; candidate rewrites."""
    from .kernel_profile import ProfileConfig, profile_forward, to_text, write_report

    config = ProfileConfig(model=model, task=task, size=parse_size(size, min_side=16), device=device,
                           precisions=tuple(dict.fromkeys(precisions)), row_limit=rows,
                           candidates=candidates)
    report = profile_forward(config, CallbackProgress(lambda m: click.echo(m, err=True)))
    click.echo(to_text(report))
    if out is not None:
        for path in write_report(report, out):
            click.echo(f"wrote {path}", err=True)
