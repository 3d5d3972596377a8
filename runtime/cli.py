"""``rfrun``: fuse two live or recorded streams in real time; ``rfrun calibrate`` for the homography.

Thin layer: options -> :class:`~refusion.runtime.pipeline.RunConfig` ->
:func:`~refusion.runtime.pipeline.run`. Bad input ends with one message and exit
code 1 (usage errors 2). Ctrl-C (130) and SIGTERM (143) end the run with its
outputs finalised, also when stdout/stderr is a pipe whose reader is gone.
"""
from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import click

from .align import MAX_PIXELS
from .backends import BACKENDS
from .clitools import HELP_SETTINGS, STOP_SIGNALS, SizeType, friendly_errors, say, setup_logging
from .pipeline import NORMALISATIONS, PAIRINGS, RunConfig, run
from .progress import TqdmProgress
from .tasks import TASKS

DEMO_OUT = Path("rfrun-demo.mp4")


SIZE = SizeType(max_pixels=MAX_PIXELS)  # H x W, as in every refusion command

#: Option names of source a and source b (task aliases), to tell which ones the user typed.
A_OPTIONS = ("--a", "--ir", "--near", "--under", "--func")
B_OPTIONS = ("--b", "--vis", "--far", "--over", "--mri")


class RfrunGroup(click.Group):
    """Remembers which source options were typed (``--func/--mri`` vs ``--ir/--vis``), so a model
    run on another task's sources can be warned about."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["source_options"] = source_option_names(args)
        return super().parse_args(ctx, args)


def source_option_names(args: list[str]) -> tuple[str, str] | None:
    """("ir", "vis") for ``--ir X --vis Y`` ...; None unless both sources were given by option."""
    found = {}
    for arg in args:
        name = arg.split("=", 1)[0]
        for key, names in (("a", A_OPTIONS), ("b", B_OPTIONS)):
            if name in names:
                found[key] = name[2:]
    return (found["a"], found["b"]) if len(found) == 2 else None


def free_demo_path(path: Path = DEMO_OUT) -> Path:
    """``rfrun-demo.mp4``, or ``rfrun-demo-2.mp4``, ``-3`` ... when earlier demos are there."""
    if not path.exists():
        return path
    for n in itertools.count(2):
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        if not candidate.exists():
            return candidate
    raise AssertionError("unreachable")


def window_support() -> str:
    """"" when an OpenCV window can open here, else why not (one phrase)."""
    import cv2

    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:") and line.split(":", 1)[1].strip().upper() in ("NONE", "NO", ""):
            return "this OpenCV build has no window support (opencv-python-headless)"
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "there is no display (DISPLAY is not set)"
    return ""


_SOURCE_HELP_A = "source a: camN, video file, image folder or glob, rtsp:// or http:// URL, or a GStreamer pipeline"


@click.group(
    cls=RfrunGroup,
    invoke_without_command=True,
    no_args_is_help=True,
    context_settings={**HELP_SETTINGS, "max_content_width": 100},
)
@click.option("--a", "--ir", "--near", "--under", "--func", "a", metavar="SOURCE",
              help=f"{_SOURCE_HELP_A}. Task aliases: --ir (IVIF), --near (MFIF), --under (MEIF), "
                   "--func (MIF: CT/PET/SPECT).")
@click.option("--b", "--vis", "--far", "--over", "--mri", "b", metavar="SOURCE",
              help="source b, same forms. Task aliases: --vis, --far, --over, --mri.")
@click.option("-m", "--model", "--engine", "model", type=click.Path(dir_okay=False, path_type=Path),
              help="colour ONNX (<stem>.colour.onnx), TensorRT plan (--engine is the same option), "
                   "or checkpoint (.pt/.pth, --backend torch); "
                   "default: the bundled model of the task (--task, or the source options: --ir/--vis IVIF, "
                   "--func/--mri MIF, --near/--far MFIF, --under/--over MEIF; --a/--b: IVIF).")
@click.option("--task", type=click.Choice(TASKS), default=None,
              help="the task whose bundled model runs when no --model is given (default: the one the source "
                   "options name). A model trained for another task is run with a warning.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="auto: TensorRT for a .plan; for ONNX the CUDA provider when it really runs, else CPU. "
                   "torch: a PyTorch checkpoint (or the one beside the ONNX, e.g. the bundled model) with torch, "
                   "FP16 + CUDA graphs on a GPU, FP32 on the CPU.")
@click.option("--trust-engine-code", is_flag=True,
              help="allow a version-compatible TensorRT plan to run the host code stored inside it. "
                   "Only for plans from a source you trust.")
@click.option("-o", "--out", "outputs", multiple=True, type=click.Path(path_type=Path),
              help="output: video (.mp4/.avi/...), image folder (no suffix), or one image for a still pair. "
                   "Repeatable. Checked for writability before anything starts.")
@click.option("--show", is_flag=True, help="show the fused stream in a window (q or Esc stops). Cameras and "
              "streams without --out are shown by default where OpenCV can open a window.")
@click.option("--side-by-side", is_flag=True, help="show/write a | b | fused instead of the fused frame alone.")
@click.option("--overlay", is_flag=True, help="draw FPS and latency on shown and written frames.")
@click.option("--norm", "normalisation", type=click.Choice(NORMALISATIONS), default="auto", show_default=True,
              help="output normalisation: minmax per frame (still images), ema smoothed (video, cameras), none.")
@click.option("--ema-alpha", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="EMA smoothing factor (default: the model card's, 0.9).")
@click.option("--size", type=SIZE, default=None,
              help="resize both sources to HxW, e.g. 480x640 (with --demo: the demo frame size, default 240x320).")
@click.option("--infer-size", type=SIZE, default=None,
              help="run the network at this smaller HxW (faster on a CPU) and keep the frame size: the fused "
                   "luma is upsampled, the colour comes from the full-size sources. At least 16 px per side.")
@click.option("--homography", type=click.Path(dir_okay=False, path_type=Path),
              help="JSON from `rfrun calibrate`: warps b onto a.")
@click.option("--no-resize", is_flag=True, help="sources of different sizes are an error instead of resizing b.")
@click.option("--pair-by", type=click.Choice(PAIRINGS), default="name", show_default=True,
              help="image folders/globs: pair files by name (a.png and b.png are no pair), or by sorted order.")
@click.option("--max-skew-ms", type=click.FloatRange(min=0), default=50.0, show_default=True,
              help="live sources: most capture-time difference within a fused pair.")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="stop after N fused frames.")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=None,
              help="output video frame rate (default: the source's, else 25).")
@click.option("--overwrite", is_flag=True, help="replace existing outputs.")
@click.option("--stats-json", type=click.Path(dir_okay=False, path_type=Path),
              help="write the run summary (frames, drops, per-stage p50/p95/p99) as JSON.")
@click.option("--demo", is_flag=True,
              help=f"fuse a built-in procedural IR/visible sequence (no data, CPU is enough); writes {DEMO_OUT} "
                   f"({DEMO_OUT.stem}-2{DEMO_OUT.suffix}, ... when it exists).")
@click.option("--frames", type=click.IntRange(min=1), default=60, show_default=True, help="--demo: number of frames.")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar.")
@click.option("-v", "--verbose", count=True, help="more log output.")
@click.pass_context
@friendly_errors
def cli(ctx, a, b, model, task, backend, trust_engine_code, outputs, show, side_by_side, overlay, normalisation,
        ema_alpha, size, infer_size, homography, no_resize, pair_by, max_skew_ms, max_frames, fps, overwrite,
        stats_json, demo, frames, quiet, verbose):
    """Fuse two image streams (infrared + visible, ...) in real time with a ReFusion model.

    \b
    Examples:
      rfrun --demo
      rfrun --engine ivif.colour.fp16.plan --ir cam0 --vis cam1       (a window where OpenCV has one)
      rfrun --ir cam0 --vis cam1 --show --homography ir2vis.json
      rfrun --ir ir.mp4 --vis vis.mp4 -m ivif.colour.onnx -o fused.mp4
      rfrun --ir data/ir --vis data/vis -o fused/            (folders paired by file name)
      rfrun --func ct/ --mri mri/ -o fused/                  (the bundled MIF model; MFIF: --near/--far,
                                                              MEIF: --under/--over)
    """
    if ctx.invoked_subcommand is not None:
        return
    setup_logging(verbose)
    _quiet_opencv()
    if demo:
        from .demo import DEFAULT_SIZE, demo_spec

        if a or b:
            raise click.UsageError("--demo makes its own sources; drop --a/--b")
        demo_size = size or DEFAULT_SIZE
        a, b = demo_spec("ir", frames, demo_size), demo_spec("vis", frames, demo_size)
        size = None
        outputs = outputs or (() if show else (DEMO_OUT if overwrite else free_demo_path(),))
    elif not a or not b:
        raise click.UsageError("give both sources (--a/--ir ... and --b/--vis ...), or try --demo")
    if not outputs and not show:
        from .sources import is_live_spec

        if not (is_live_spec(a) or is_live_spec(b)):
            raise click.UsageError("nothing to do: give --out (e.g. -o fused.mp4) and/or --show")
        why = window_support()
        if why:
            raise click.UsageError(f"no --out, and no window to show the live fusion in: {why}. "
                                   "Record it with -o fused.mp4 (or -o frames/), or pip install opencv-python "
                                   "on a desktop to watch it")
        show = True
        say("no --out: showing the fused stream in a window (q or Esc stops; -o fused.mp4 records it)", err=True)
    config = RunConfig(
        a=a, b=b, model=model, backend=backend, trust_engine_code=trust_engine_code, outputs=tuple(outputs),
        show=show, view="side-by-side" if side_by_side else "fused", overlay=overlay,
        normalisation=normalisation, ema_alpha=ema_alpha, size=size, infer_size=infer_size, homography=homography,
        no_resize=no_resize, max_skew_ms=max_skew_ms, max_frames=max_frames, fps=fps, overwrite=overwrite,
        stats_json=stats_json, pair_by=pair_by, source_options=ctx.meta.get("source_options"), task=task,
    )
    summary = run(config, TqdmProgress(quiet))
    say(summary.format())
    if stats_json:
        say(f"wrote {stats_json}")
    if summary.stopped_by == "interrupt":
        kept = ", ".join(summary.outputs)
        verb = "holds" if len(summary.outputs) == 1 else "hold"
        say(f"interrupted by {STOP_SIGNALS.name()}: " + (f"{kept} {verb} the frames fused so far" if kept
            else "no frame was fused; nothing written"), err=True)
        ctx.exit(STOP_SIGNALS.exit_code())


@cli.command()
@click.option("--points", type=click.Path(dir_okay=False, path_type=Path),
              help="point pairs: JSON {\"a\": [[x, y], ...], \"b\": [[x, y], ...]} or CSV xa,ya,xb,yb.")
@click.option("--checkerboard", nargs=2, type=click.Path(dir_okay=False, path_type=Path),
              metavar="IMAGE_A IMAGE_B", help="one image of a checkerboard from each camera.")
@click.option("--pattern", type=SIZE, default="9x6", show_default=True, metavar="COLSxROWS",
              help="checkerboard inner corners, columns x rows.")
@click.option("--size-a", type=SIZE, help="--points: frame size of camera a (HxW), recorded so it can be rescaled.")
@click.option("--size-b", type=SIZE, help="--points: frame size of camera b (HxW).")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="homography JSON to write (use it with rfrun --homography).")
@click.option("--overwrite", is_flag=True, help="replace an existing file.")
@friendly_errors
def calibrate(points, checkerboard, pattern, size_a, size_b, out, overwrite):
    """Estimate the homography that maps camera b's pixels onto camera a's."""
    from . import align
    from .imageio import read_image

    from .fsutil import check_writable

    if bool(points) == bool(checkerboard):
        raise click.UsageError("give either --points FILE or --checkerboard IMAGE_A IMAGE_B")
    check_writable(out, "homography")
    if points:
        pa, pb = align.read_point_pairs(points)
        h = align.estimate_homography(pa, pb, size_a, size_b, method=f"points ({points.name})")
    else:
        cols, rows = pattern  # parsed by the HxW type, but this one is COLSxROWS
        h = align.calibrate_checkerboard(read_image(checkerboard[0]), read_image(checkerboard[1]), (cols, rows))
    align.save_homography(out, h, overwrite=overwrite)
    click.echo(f"homography b -> a from {h.points} points, RMS error {h.rms_px:.3f} px ({h.method})")
    click.echo(f"wrote {out}")


def _quiet_opencv() -> None:
    """Keep OpenCV's own warnings (e.g. a missing camera) off the console; we report errors ourselves."""
    try:
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except (ImportError, AttributeError):
        pass


def main() -> None:
    """Console-script entry point ``rfrun``."""
    # FFmpeg's own log lines can echo stream URLs (with credentials); we report errors ourselves.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    STOP_SIGNALS.install()  # SIGTERM finalises the outputs like Ctrl-C
    cli(prog_name="rfrun")


if __name__ == "__main__":
    main()
