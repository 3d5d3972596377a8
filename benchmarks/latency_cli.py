"""``rfbench latency``: a thin click command over :func:`refusion.benchmarks.latency.run_latency`."""
from __future__ import annotations

import logging
from pathlib import Path

import click

from refusion.runtime.clitools import HELP_SETTINGS, friendly_errors, parse_size
from refusion.runtime.progress import CallbackProgress
from refusion.runtime.size import Size

from .latency import BACKENDS, DEVICE_BACKENDS, GRAPHS, LatencyConfig
from .results_io import DEFAULT_RESULTS_DIR, check_results_dir

DEFAULT_OUT = DEFAULT_RESULTS_DIR  # relative to the current folder, never the package's benchmarks/results


def _size(text: str) -> Size:
    """'480x640' (HxW) -> Size(480, 640)."""
    return parse_size(text, min_side=16)


@click.command("latency", context_settings=dict(HELP_SETTINGS))
@click.option("--model", "model", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="Our checkpoint (*.pt) or an authors' ReFusion .pth.")
@click.option("--task", default=None, help="Task of an authors' .pth (e.g. ivif).")
@click.option("--device", "device", type=click.Choice(sorted(DEVICE_BACKENDS)), default="cpu", show_default=True,
              help="Backend preset: cpu (torch eager, ORT default, ORT tuned), cuda (torch CUDA incl. rfrun's torch backend, ORT CUDA, TensorRT), all.")
@click.option("--backend", "backends", multiple=True, type=click.Choice(list(BACKENDS)),
              help="Explicit backends (repeatable); overrides --device.")
@click.option("--size", "sizes", multiple=True, default=("256x256", "480x640"), show_default=True,
              help="Frame size HxW (repeatable), e.g. --size 480x640 --size 1080x1920.")
@click.option("--graph", "graphs", multiple=True, type=click.Choice(list(GRAPHS)), default=GRAPHS, show_default=True)
@click.option("--warmup", type=click.IntRange(0, 1000), default=2, show_default=True)
@click.option("--iters", type=click.IntRange(1, 100000), default=10, show_default=True)
@click.option("--max-row-seconds", "max_row_s", type=click.FloatRange(0.1), default=60.0, show_default=True,
              help="Stop timing a row after this long (at least 3 runs).")
@click.option("--threads", type=click.IntRange(0, 1024), default=0, help="CPU threads (0 = physical cores).")
@click.option("--pair", nargs=2, type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Two images (a, b) to run on; default a synthetic structured pair.")
@click.option("--pipeline", is_flag=True, help="Also time the rfrun pipeline per stage on a recorded sequence.")
@click.option("--pipeline-source", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Folder with ir/ and vis/ (or a/ and b/) image sequences (default TNO seq_Tree, else the demo).")
@click.option("--pipeline-frames", type=click.IntRange(1), default=10, show_default=True)
@click.option("--pipeline-size", default=None, help="HxW to resize the pipeline's sources to.")
@click.option("--profile", is_flag=True, help="Add ORT CPU per-op profiles (unoptimised vs tuned).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_OUT, show_default=True,
              help="Folder for the JSON + markdown results (checked before timing starts). The committed "
                   "results live in the checkout's benchmarks/results: give it here to add one on purpose.")
@click.option("--overwrite", is_flag=True, help="Replace a result of the same name (default: keep it and number "
              "the new one).")
@click.option("--no-write", is_flag=True, help="Print the table only.")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep the exported ONNX files here (default: a temporary folder).")
@click.option("--tag", default="", help="Suffix for the result file names.")
@friendly_errors
def latency(model, task, device, backends, sizes, graphs, warmup, iters, max_row_s, threads, pair, pipeline,
            pipeline_source, pipeline_frames, pipeline_size, profile, out_dir, overwrite, no_write, work_dir,
            tag) -> None:
    """Measure latency (p50/p90/p99, FPS), error vs PyTorch FP32 and peak memory of every backend."""
    from .latency import run_latency, to_markdown

    logging.basicConfig(level=logging.WARNING)
    if not no_write:
        check_results_dir(out_dir)
    config = LatencyConfig(
        model=model,
        task=task,
        backends=tuple(backends) or DEVICE_BACKENDS[device],
        sizes=tuple(_size(s) for s in sizes),
        graphs=tuple(dict.fromkeys(graphs)),
        warmup=warmup,
        iters=iters,
        max_row_s=max_row_s,
        threads=threads,
        pair=tuple(pair) if pair else None,
        work_dir=work_dir,
        out_dir=None if no_write else out_dir,
        overwrite=overwrite,
        pipeline=pipeline,
        pipeline_source=pipeline_source,
        pipeline_frames=pipeline_frames,
        pipeline_size=None if pipeline_size is None else _size(pipeline_size),
        profile=profile,
        tag=tag,
    )
    report = run_latency(config, CallbackProgress(lambda msg: click.echo(msg, err=True)))
    click.echo(to_markdown(report))
    for path in report.get("files", []):
        click.echo(f"wrote {path}", err=True)
