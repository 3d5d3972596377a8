"""rfexport: checkpoint -> checked ONNX (FP32/FP16) -> TensorRT engine -> Triton repository.

    rfexport [export] MODEL [--fp16] [--task T] [--out DIR] ...   (export is the default command)
    rfexport engine MODEL.fp16.onnx [--min-size HxW --opt-size HxW --max-size HxW] ...

Sizes are H x W (rows x columns), e.g. 480x640. Only click and the standard library
are imported at module level, so ``--help`` works with the base install.
"""
from __future__ import annotations

from pathlib import Path

import click

from refusion.runtime.clitools import SizeType, friendly_errors, setup_logging

TASK_CHOICES = ("ivif", "mif", "mfif", "meif")  # = refusion.train.checkpoint.TASKS (not imported: torch)


SIZE = SizeType(min_side=16)


class DefaultCommandGroup(click.Group):
    """A group that runs ``default_command`` when the first argument is not a subcommand.

    So ``rfexport --fp16 model.pt`` means ``rfexport export --fp16 model.pt``.
    """

    default_command = "export"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


def engine_options(func):
    """Options shared by ``export`` and ``engine`` (TensorRT build)."""
    opts = [
        click.option("--min-size", type=SIZE, default="64x64", show_default=True, help="Smallest frame (H x W) of the engine profile."),
        click.option("--opt-size", type=SIZE, default="480x640", show_default=True, help="Frame size (H x W) the engine is tuned for."),
        click.option("--max-size", type=SIZE, default="1080x1920", show_default=True, help="Largest frame (H x W) of the engine profile."),
        click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path), help="TensorRT timing cache file (default: beside the plan, one per TensorRT version)."),
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
        min_size=kw["min_size"],
        opt_size=kw["opt_size"],
        max_size=kw["max_size"],
        timing_cache=kw["timing_cache"],
        workspace_mib=kw["workspace_mib"],
        version_compatible=kw["version_compatible"],
        hardware_compatible=kw["hardware_compatible"],
        overwrite=kw.get("overwrite", False),
    )


@click.group(cls=DefaultCommandGroup)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """Export a ReFusion model to ONNX (FP32/FP16), TensorRT and Triton.

    \b
    rfexport --fp16 model.pt                 ONNX core + colour graphs (and FP16 variants)
    rfexport engine model.colour.fp16.onnx   TensorRT plan + side-car on this GPU
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
@click.option("--engine/--no-engine", default=None, help="Build the TensorRT engine of the colour graph [default: when a GPU and TensorRT are present].")
@engine_options
@friendly_errors
def export_cmd(model: Path, task, out_dir, fp16, overwrite, opset, check_images, check_sizes, fp16_check_sizes, engine, **kw) -> None:
    """Export MODEL (our checkpoint *.pt or an authors' .pth) to checked ONNX files."""
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
    )
    wf = WorkflowConfig(export=cfg, engine=engine, engine_template=_engine_config(Path("."), None, kw), triton_repo=kw["triton_repo"])
    result = run_export(wf, click.echo)
    for path in result.onnx.files.values():
        click.echo(f"wrote {path}")


@main.command("engine")
@click.argument("onnx", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="Plan file (*.plan) or folder (default: beside the ONNX).")
@click.option("--overwrite", is_flag=True, help="Replace an existing plan.")
@engine_options
@friendly_errors
def engine_cmd(onnx: Path, out, overwrite, **kw) -> None:
    """Build a TensorRT plan (+ .plan.json side-car) from an rfexport ONNX file, on this GPU.

    Use the FP16 ONNX (MODEL.colour.fp16.onnx) for an FP16 engine: precision comes from
    the graph (TensorRT 11 has no FP16 flag), and the build is refused if it comes out FP32.
    """
    from .tensorrt_build import build_engine

    kw["overwrite"] = overwrite
    result = build_engine(_engine_config(onnx, out, kw), click.echo)
    if kw["triton_repo"] is not None:
        from refusion.runtime.sidecar import read_sidecar

        from .triton import write_triton_repo

        side = read_sidecar(result.plan)
        import json

        folder = write_triton_repo(
            kw["triton_repo"], result.plan, side["graph"], json.dumps(side["model_card"], sort_keys=True), overwrite=overwrite
        )
        click.echo(f"Triton model: {folder}")


if __name__ == "__main__":  # pragma: no cover
    main()
