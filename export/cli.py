"""rfexport: checkpoint -> checked ONNX (FP32/FP16) -> TensorRT engine -> Triton repository.

    rfexport [export] MODEL [--fp16] [--task T] [--out DIR] ...   (export is the default command)
    rfexport engine MODEL.fp16.onnx [--min-size HxW --opt-size HxW --max-size HxW] ...
    rfexport triton MODEL.onnx|MODEL.plan --repo DIR

Sizes are H x W (rows x columns), e.g. 480x640. Only click and the standard library
are imported at module level, so ``--help`` works with the base install.
"""
from __future__ import annotations

from pathlib import Path

import click

from refusion.runtime.clitools import HELP_SETTINGS, SizeType, friendly_errors, setup_logging
from refusion.runtime.progress import CallbackProgress

TASK_CHOICES = ("ivif", "mif", "mfif", "meif")  # = refusion.train.checkpoint.TASKS (not imported: torch)


SIZE = SizeType(min_side=16)
FLAVOUR_CHOICES = ("auto", "tensorrt", "tensorrt_rtx")  # = tensorrt_build.FLAVOUR_CHOICES (not imported: keep --help light)


class ComputeCapabilityType(click.ParamType):
    """A compute capability written ``8.6`` -> (8, 6)."""

    name = "X.Y"

    def convert(self, value, param, ctx) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        from refusion.runtime.errors import EngineError
        from refusion.runtime.sidecar import parse_cc

        try:
            return parse_cc(value)
        except EngineError as exc:
            self.fail(str(exc), param, ctx)


class DefaultCommandGroup(click.Group):
    """A group that runs ``default_command`` when the first argument is not a subcommand.

    So ``rfexport --fp16 model.pt`` means ``rfexport export --fp16 model.pt``, and
    ``rfexport -v model.pt`` means ``rfexport -v export model.pt``. The group's own options
    (-v, -h) may come first; ``rfexport -h`` and ``rfexport triton -h`` show their own help.
    """

    default_command = "export"
    group_flags = ("-v", "-vv", "-vvv", "--verbose", "-h", "--help")

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        i = 0
        while i < len(args) and args[i] in self.group_flags and args[i] not in ("-h", "--help"):
            i += 1
        rest = args[i:]
        if rest and rest[0] not in self.commands and rest[0] not in ("-h", "--help"):
            args = [*args[:i], self.default_command, *rest]
        return super().parse_args(ctx, args)


def engine_options(func):
    """Options shared by ``export`` and ``engine`` (TensorRT build)."""
    opts = [
        click.option("--min-size", type=SIZE, default="64x64", show_default=True, help="Smallest frame (H x W) of the engine profile."),
        click.option("--opt-size", type=SIZE, default="480x640", show_default=True, help="Frame size (H x W) the engine is tuned for."),
        click.option("--max-size", type=SIZE, default="1080x1920", show_default=True, help="Largest frame (H x W) of the engine profile."),
        click.option("--trt-flavour", type=click.Choice(FLAVOUR_CHOICES), default="auto", show_default=True, help="TensorRT to build with: full tensorrt (10.x/11.x, needs a GPU, builds for it) or tensorrt_rtx (no GPU needed, engines for RTX GPUs); auto: tensorrt when a GPU is present, else tensorrt_rtx."),
        click.option("--compute-capability", "compute_capabilities", type=ComputeCapabilityType(), multiple=True, help="tensorrt_rtx: a target GPU compute capability, e.g. 8.6 (repeatable; default: TensorRT-RTX's own, 8.0 8.6 8.9 12.0+; 7.5 only on request)."),
        click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path), help="Full TensorRT: timing cache file (default: beside the plan, one per TensorRT version). tensorrt_rtx keeps a runtime cache beside the plan when it runs instead."),
        click.option("--workspace-mib", type=click.IntRange(64), default=4096, show_default=True, help="TensorRT builder workspace limit."),
        click.option("--version-compatible", is_flag=True, help="Build a version-compatible plan: runs on later TensorRT of the same major version and on the lean runtime (tensorrt_lean); loading it needs --trust-engine-code in rfrun."),
        click.option("--hardware-compatible", is_flag=True, help="Build for any Ampere-or-later GPU (compute capability >= 8.0), not just this one; may be slower."),
        click.option("--triton-repo", type=click.Path(file_okay=False, path_type=Path), help="Also write a Triton Inference Server model repository into this folder."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def _engine_config(onnx: Path, out: Path | None, kw: dict):
    from .tensorrt_build import EngineConfig

    return EngineConfig(
        onnx=onnx,
        out=out,
        flavour=kw["trt_flavour"],
        compute_capabilities=tuple(kw["compute_capabilities"]),
        min_size=kw["min_size"],
        opt_size=kw["opt_size"],
        max_size=kw["max_size"],
        timing_cache=kw["timing_cache"],
        workspace_mib=kw["workspace_mib"],
        version_compatible=kw["version_compatible"],
        hardware_compatible=kw["hardware_compatible"],
        overwrite=kw.get("overwrite", False),
    )


@click.group(cls=DefaultCommandGroup, context_settings={**HELP_SETTINGS, "max_content_width": 100})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """Export a ReFusion model to ONNX (FP32/FP16), TensorRT and Triton.

    \b
    rfexport --fp16 model.pt                 ONNX core + colour graphs (and FP16 variants), then the engine
    rfexport engine model.colour.fp16.onnx   TensorRT plan + side-car (tensorrt_rtx: no GPU needed)
    rfexport triton model.colour.onnx --repo models/   a Triton model repository entry
    """
    setup_logging(verbose)


@main.command("export")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--task", type=click.Choice(TASK_CHOICES), help="Task of an authors' .pth (our checkpoints store it).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Output folder (default: beside the model).")
@click.option("--fp16", is_flag=True, help="Also write FP16 graphs (float16 interior, float32 islands), checked against FP32.")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
@click.option("--opset", type=click.IntRange(17), default=17, show_default=True, help="ONNX opset.")
@click.option("--check-images", nargs=2, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="A real pair (source a, source b) for the parity checks (default: a synthetic pair).")
@click.option("--check-size", "check_sizes", type=SIZE, multiple=True, help="Sizes (H x W) of the ONNX vs PyTorch checks [default: 120x160, 97x131].")
@click.option("--fp16-check-size", "fp16_check_sizes", type=SIZE, multiple=True, help="Sizes of the FP16 vs FP32 checks [default: 480x640, 1080x1920].")
@click.option("--fp16-tolerance", type=click.FloatRange(min=0), default=None, help="Largest FP16 vs FP32 difference accepted, in 8-bit levels of the output [default: 2]; beyond it the FP16 graphs are refused (the FP32 ones are still written).")
@click.option("--engine/--no-engine", default=None, help="Build the TensorRT engine of the colour graph [default: when this machine can: tensorrt_rtx installed, or full TensorRT and a GPU].")
@engine_options
@friendly_errors
def export_cmd(model: Path, task, out_dir, fp16, overwrite, opset, check_images, check_sizes, fp16_check_sizes, fp16_tolerance, engine, **kw) -> None:
    """Export MODEL (our checkpoint *.pt or an authors' .pth) to checked ONNX files, then a TensorRT engine."""
    from .onnx_export import ExportConfig
    from .workflow import WorkflowConfig, run_export

    base = ExportConfig(model=model)
    cfg = ExportConfig(
        model=model,
        task=task,
        out_dir=out_dir,
        fp16=fp16,
        overwrite=overwrite,
        opset=opset,
        check_sizes=tuple(check_sizes) or base.check_sizes,
        fp16_check_sizes=tuple(fp16_check_sizes) or base.fp16_check_sizes,
        check_images=tuple(check_images) if check_images else None,
        fp16_tolerance_levels=fp16_tolerance if fp16_tolerance is not None else base.fp16_tolerance_levels,
    )
    wf = WorkflowConfig(export=cfg, engine=engine, engine_template=_engine_config(Path("."), None, kw), triton_repo=kw["triton_repo"])
    run_export(wf, CallbackProgress(click.echo))


@main.command("engine")
@click.argument("onnx", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="Plan file (*.plan) or folder (default: beside the ONNX).")
@click.option("--overwrite", is_flag=True, help="Replace an existing plan.")
@engine_options
@friendly_errors
def engine_cmd(onnx: Path, out, overwrite, **kw) -> None:
    """Build a TensorRT plan (+ .plan.json side-car) from an rfexport ONNX file.

    Full TensorRT builds on and for this GPU; tensorrt_rtx builds without a GPU for RTX
    GPUs (--compute-capability). Use the FP16 ONNX (MODEL.colour.fp16.onnx) for an FP16
    engine: precision comes from the graph (TensorRT 11 and RTX have no FP16 flag), and the
    build is refused when the parsed network lost its FP16 interior or float32 islands.
    """
    from .tensorrt_build import build_engine

    kw["overwrite"] = overwrite
    result = build_engine(_engine_config(onnx, out, kw), CallbackProgress(click.echo))
    if kw["triton_repo"] is not None:
        from .triton import add_to_repo

        folder = add_to_repo(result.plan, kw["triton_repo"], overwrite=overwrite)
        click.echo(f"Triton model: {folder}")


@main.command("triton")
@click.argument("artifact", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--repo", type=click.Path(file_okay=False, path_type=Path), required=True, help="Triton model repository folder (created if missing).")
@click.option("--name", help="Model name (default: from the file name, e.g. ivif_colour_fp16_trt).")
@click.option("--overwrite", is_flag=True, help="Replace an existing model of that name.")
@friendly_errors
def triton_cmd(artifact: Path, repo: Path, name: str | None, overwrite: bool) -> None:
    """Add ARTIFACT (an rfexport .onnx, or a .plan with its side-car) to a Triton model repository."""
    from .triton import add_to_repo

    folder = add_to_repo(artifact, repo, name=name, overwrite=overwrite)
    click.echo(f"Triton model: {folder}")


if __name__ == "__main__":  # pragma: no cover
    main()
