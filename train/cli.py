"""rftrain: train ReFusion (F with the meta-learned loss of P and the reconstruction R).

Console script: ``rftrain = refusion.train.cli:main``. Multi-GPU: ``torchrun
--nproc_per_node=N -m refusion.train.cli TASK ...`` (or ``torchrun ... $(which rftrain)``).
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import click

from refusion.runtime.clitools import HELP_SETTINGS, friendly_errors, setup_logging
from refusion.runtime.progress import TqdmProgress

from .config import PRESETS, RUNS_DIR, TASK_ROLES, TASKS, VAL_METRICS

SYNTH_HELP = (
    "Folder of images to make training pairs from (train/synth.py has the recipes). mfif, from sharp images: "
    "a smooth random focus mask covering 30-70%, Gaussian defocus with sigma in [1.5, 4] px; near = sharp inside "
    "the mask, far = sharp outside. meif, from well-exposed images: gamma in [1.8, 2.6] linearises, under = 1.5-3 "
    "stops down with read noise, over = 1.5-3 stops up clipped at white, both stored as 8 bits. With "
    "--val-from-train N, N whole images are held out for validation. Real pairs in --data's train split are added."
)


class MinutesList(click.ParamType):
    """'10,20,40,60' -> (10, 20, 40, 60): positive whole minutes, sorted."""

    name = "MINUTES"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        try:
            minutes = tuple(sorted({int(m) for m in str(value).split(",") if m.strip()}))
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of whole minutes", param, ctx)
        if not minutes or minutes[0] <= 0:
            self.fail(f"{value!r}: give positive whole minutes, e.g. 10,20,40,60", param, ctx)
        return minutes


def _opt(*names: str, **kw: Any):
    return click.option(*names, default=None, show_default=False, **kw)


@click.command(context_settings={**HELP_SETTINGS, "max_content_width": 100})
@click.argument("task", type=click.Choice(TASKS))
@click.option("--data", type=click.Path(file_okay=False), help="Dataset root with <split>/<role>/<name> "
              "(roles: " + "; ".join(f"{t} {a},{b}" for t, (a, b) in TASK_ROLES.items()) + ").")
@_opt("--a-dir", type=click.Path(file_okay=False), help="Folder of sources a (instead of --data).")
@_opt("--b-dir", type=click.Path(file_okay=False), help="Folder of sources b.")
@_opt("--val-a-dir", type=click.Path(file_okay=False), help="Validation sources a (default <data>/test/<role>).")
@_opt("--val-b-dir", type=click.Path(file_okay=False), help="Validation sources b.")
@_opt("--synthesize-from", type=click.Path(file_okay=False), help=SYNTH_HELP)
@_opt("--synth-pairs", type=int, help="Synthetic pairs to build (0: one per image).")
@_opt("--train-split", help="Split folder used for training [train].")
@_opt("--val-split", help="Split folder used for validation [test].")
@_opt("--val-pairs", type=int, help="Held-out pairs scored every epoch (0: none).")
@_opt("--val-from-train", type=int, help="Hold out this many training pairs (evenly spaced by name, not trained "
      "on) as the validation set, instead of the --val-split folder (0: off).")
@click.option("--out", "-o", default=None, type=click.Path(file_okay=False),
              help=f"Run directory [default: {RUNS_DIR}/TASK, numbered {RUNS_DIR}/TASK2, ... when it exists; "
                   "with --resume the newest one]. Checked for writability before anything starts.")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="paper", show_default=True,
              help="paper: the paper's schedule (a GPU). quick: 4 epochs, F at lr 1e-3, 51 min for IVIF on one "
                   "core of the 2-core CPU (measured). long: 6 epochs, 65-78 min; for ivif 9 epochs, 113 min (the "
                   "bundled IVIF model is its best epoch, 9). For ivif both step P with Adam at 1e-4 (quick then "
                   "beats averaging on all 7 metrics on MSRS, with the max-normalised step on 6), and long "
                   "warm-starts P (--p-prior-steps 150) and looks ahead with --inner-lr 0.1. quick/long hold 4 "
                   "training pairs "
                   "out for validation and pick best.pt on their Q_AB/F; scores in the README. For mif, quick "
                   "steps P at 1e-2 (at 1e-3 it hardly moves; 48 min, the bundled MIF model is its epoch 2).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from last.pt (exact, mid-epoch too) with "
              "its stored settings; options given with --resume override them (e.g. --epochs, --device).")
@click.option("--overwrite", is_flag=True, help="Delete the checkpoints in --out and start again.")
@_opt("--epochs", type=int, help="L: epochs.")
@_opt("--meta-steps", type=int, help="M: outer (meta) steps per epoch.")
@_opt("--fusion-steps", type=int, help="N: fusion & reconstruction steps per epoch.")
@_opt("--crop", type=int, help="Random crop size of the fusion phase. Peak memory on the CPU at batch 4 "
      "(rfbench train, meta step): 128 -> 3694 MiB, 96 -> 2261 MiB; lower --crop/--meta-crop on a small machine.")
@_opt("--meta-crop", type=int, help="Crop size of the meta phase [default: same as --crop].")
@_opt("--pairs-per-batch", type=int, help="Pairs per batch (the batch also holds them swapped).")
@click.option("--no-swap", is_flag=True, default=None, help="Disable the a/b swap augmentation.")
@_opt("--lr", type=float, help="Adam lr of F and R, and the inner look-ahead step.")
@_opt("--lr-step", type=int, help="StepLR period (epochs).")
@_opt("--lr-gamma", type=float, help="StepLR factor.")
@_opt("--p-lr", type=float, help="Step size of P [default: same as --lr, the paper].")
@_opt("--p-optimizer", type=click.Choice(["maxnorm", "adam"]), help="P's update: max-normalised SGD (paper) or Adam.")
@_opt("--outer-accum", type=int, help="Outer steps accumulated per update of P.")
@_opt("--inner-lr", type=float, help="Look-ahead step of the inner update [default: the current lr]. For IVIF, "
     "from 3e-2 up the meta-gradient lowers the infrared weight instead of raising it (rfbench direction); "
     "with 0.1 the long preset scored lower on validation from P's random start, and higher from the warm start "
     "(--p-prior-steps), so IVIF's long preset uses 0.1 (benchmarks/results/quality/ivif_presets/).")
@_opt("--p-prior-steps", type=int, help="Warm start: Adam steps fitting P to the max-intensity/max-gradient "
     "rule (the brighter source weighs the intensity term, the sharper one the gradient term; train/prior.py) "
     "before meta-learning moves it [0: P starts from random weights, the paper]. 1.1-1.4 s a step at crop 96 "
     "on one core.")
@_opt("--p-prior-temperature-w", type=float, help="Softness of the warm start's intensity rule: w_ir = "
     "sigmoid((ir - vis) / T) on [0, 1] images [0.1]. A higher T keeps w nearer 0.5 where the sources' "
     "intensities differ little, so F is taught to blend there rather than copy one source.")
@_opt("--p-prior-temperature-v", type=float, help="The same for the gradient rule: v_ir = "
     "sigmoid((|grad ir| - |grad vis|) / T) [0.1].")
@_opt("--alpha1", type=float, help="Weight of L_f's gradient term.")
@_opt("--alpha2", type=float, help="Weight of L_r's gradient term.")
@click.option("--alpha1-ramp", is_flag=True, default=None, help="Quirk of the released schedule: alpha1 = epoch/L.")
@click.option("--leak-fusion-grad", is_flag=True, default=None,
              help="Quirk of the released code: dL_f/dP leaks into P's gradient once per P update.")
@click.option("--p-grad-stats", is_flag=True, default=None,
              help="Log the norms of P's meta term and of dL_f/dP, and their cosine, at every outer step "
                   "(a meta step costs about a tenth more).")
@_opt("--meta-grad", type=click.Choice(["jvp", "double_backward", "none"]),
      help="P's meta-gradient: jvp (exact, default), double_backward (exact, slower), none (ablation: P gets none).")
@_opt("--log-every", type=int, help="On a GPU, read losses from the device and log them every this many steps "
      "(default 10; on the CPU every step).")
@_opt("--fusion-dim", type=int, help="Width of F (16 = the released networks).")
@_opt("--aux-dim", type=int, help="Width of P and R.")
@_opt("--seed", type=int, help="Random seed (a CPU run is deterministic).")
@_opt("--device", help="auto | cpu | cuda | cuda:N.")
@_opt("--ckpt-every", type=int, help="Also write last.pt every this many steps (0: epoch ends only).")
@click.option("--save-every-epoch", is_flag=True, default=None, help="Keep epoch_NNN.pt checkpoints.")
@_opt("--best-metric", type=click.Choice(list(VAL_METRICS)), help="Validation metric deciding best.pt [qabf].")
@_opt("--snapshot-minutes", type=MinutesList(), help="Also keep minutes_NNN.pt after these minutes of training "
      "time, e.g. 10,20,40,60 (for learning curves).")
@_opt("--max-steps", type=int, help="Stop after this many steps in all (0: no limit).")
@click.option("--no-panels", is_flag=True, default=None, help="Do not write per-epoch PNG panels.")
@click.option("--threads", type=click.IntRange(min=0), default=0,
              help="CPU threads for torch (0: the physical cores available to this process, shared among "
                   "the processes of a torchrun job; as rfrun does).")
@click.option("-v", "--verbose", count=True)
@friendly_errors
def main(task: str, out: str | None, preset: str, resume: bool, overwrite: bool, threads: int, verbose: int,
         **opts: Any) -> None:
    """Train the fusion network for TASK (ivif, mif, mfif, meif) with the meta-learned loss.

    \b
    Examples:
      rftrain ivif --data data/ivif/MSRS --preset quick          (writes runs/ivif, runs/ivif2, ...)
      rftrain ivif --data data/ivif/MSRS --preset quick --out runs/ivif_quick
      python -m refusion.train.photoset photos/   (public-domain photos; needs scikit-image)
      rftrain mfif --synthesize-from photos/ --preset quick --out runs/mfif
      rftrain ivif --out runs/ivif_quick --resume
    """
    setup_logging(verbose)
    from refusion.runtime.fsutil import check_writable

    from .config import default_run_dir

    if out is None:
        out = default_run_dir(task, resume)
    check_writable(out, "run folder", folder=True)  # before torch loads and data is read

    passive_openmp()
    import torch

    torch.set_num_threads(threads or training_threads())
    from .distributed import init_distributed
    from .trainer import train

    config = _config(task, preset, resume, out, opts)
    dist = init_distributed(config.device)
    hooks = TrainProgress(enabled=dist.main)
    try:
        result = train(config, out, resume=resume, overwrite=overwrite, hooks=hooks, dist=dist)
    finally:
        if dist.world > 1:
            import torch.distributed as tdist

            tdist.destroy_process_group()
    if dist.main:
        click.echo(f"done: {result.global_step} steps, {result.epochs_done} epochs; last: {result.last}; "
                   f"best: {result.best}")


def _config(task: str, preset: str, resume: bool, out: str, opts: dict[str, Any]):
    """The run's TrainConfig: the preset with the options given; with ``resume``, the run's stored
    settings with the options given now on top."""
    from .config import TrainConfig, preset_config

    flags = {"no_swap": ("swap_augment", False), "no_panels": ("panels", False)}
    overrides: dict[str, Any] = {"task": task}
    for k, v in opts.items():
        if v is None:
            continue
        name, value = flags.get(k, (k, v))
        overrides[name] = value
    if resume:
        from pathlib import Path

        from .checkpoint import load_checkpoint

        last = Path(out) / "last.pt"
        stored = load_checkpoint(last).get("train_config") if last.is_file() else None
        if stored:
            return TrainConfig.from_dict({**stored, **overrides})
    return preset_config(preset, **overrides)


def passive_openmp() -> None:
    """Idle OpenMP workers sleep instead of spinning, as rfrun's ONNX Runtime sessions do.

    On the shared 2-core VM (load 3-7) a crop-64 meta step with 2 threads took 44.7 s and 42.3 s with
    OMP_WAIT_POLICY=ACTIVE, 11.1 s and 8.1 s with PASSIVE (``rfbench train --size 64 --threads 2``, two
    runs each): spinning workers steal the CPU the busy machine needs. Takes effect only before torch
    loads its OpenMP runtime (the console script); an OMP_WAIT_POLICY the user set wins.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def training_threads() -> int:
    """Physical cores available to this process, divided among the local processes of a torchrun job."""
    from refusion.runtime.ort_tuning import physical_cores

    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, physical_cores() // local)


class TrainProgress(TqdmProgress):
    """The training bar (one unit = one step) with the latest losses beside it, and one line per validation."""

    def __init__(self, enabled: bool = True) -> None:
        super().__init__(quiet=not enabled, unit="step")
        self.last: dict[str, str] = {}

    def step(self, info: Mapping[str, Any]) -> None:
        if info.get("phase") == "val":
            self.message("epoch {epoch} validation: ".format(**info) + ", ".join(
                f"{k[4:]} {v:.3f}" for k, v in info.items() if k.startswith("val_")))
            return
        for k in ("loss_f", "loss_r", "meta_loss"):
            if k in info:
                self.last[k] = f"{info[k]:.4g}"
        status = ", ".join([f"epoch={info['epoch']}", f"phase={info['phase']}",
                            *(f"{k}={v}" for k, v in self.last.items())])
        super().step({"postfix": status})


if __name__ == "__main__":
    main()
