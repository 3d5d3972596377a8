"""``rfbench direction``: which way P's meta-gradient moves the loss weights, per inner look-ahead step.

For a checkpoint (or freshly initialised networks) and a few meta-train/meta-test batches of the training
data, the summed meta-gradient g of P is computed for each inner lr, and for the released schedule's leak
(dL_f/dtheta_P, at the first inner lr). Reported per row: the norm of g, and the first-order change of the
mean weight of source a (w_a for the intensity term, v_a for the gradient term) along P's two step rules:
-g / |g| (a plain gradient step of length 1) and -sign(g) (the direction of Adam's first steps, every
parameter moved by 1). Source a is the first role of the task (infrared for IVIF); the swapped rows of each
batch hold a in the second channel, so the mean follows the source, not the channel. Two more probes say
whether g moves P towards per-pixel selection (the authors' IVIF output is close to the per-pixel max): the mean
intensity weight of the brighter source at each pixel (w_max) and the mean gradient weight of the source with the
larger Sobel magnitude there (v_max). The cosines between all rows' g come last. Numbers, not a verdict: which
direction helps is measured by training.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from refusion.runtime.clitools import HELP_SETTINGS, friendly_errors, setup_logging
from refusion.runtime.errors import DataError

from refusion.train.config import PRESETS, TASKS

from .results_io import DEFAULT_RESULTS_DIR, check_results_dir

LEAK = "leak"


@dataclass(frozen=True)
class Direction:
    """One row: the meta-gradient for ``inner_lr`` (or the leak) and what it does to mean w_a, v_a."""

    label: str
    grad_norm: float
    dw_sgd: float  # d mean(w_a) along -g/|g|
    dv_sgd: float
    dw_sign: float  # d mean(w_a) along -sign(g)
    dv_sign: float
    dwmax_sgd: float  # d mean(w of the brighter source) along -g/|g|
    dvmax_sgd: float  # d mean(v of the source with the larger gradient)
    dwmax_sign: float
    dvmax_sign: float


def _source_a(w, v):
    """Mean w and v of source a: the second half of the batch holds a in channel 1 (BatchSampler's order)."""
    import torch

    n = w.shape[0]
    first = (torch.arange(n, device=w.device) < n // 2)[:, None, None]
    return torch.where(first, w[:, 0], w[:, 1]).mean(), torch.where(first, v[:, 0], v[:, 1]).mean()


def source_a_means(proposal, x):
    """Mean w and v of source a over ONE batch whose second half has a and b swapped (BatchSampler's order)."""
    return _source_a(*proposal(x))


def probe_means(proposal, x):
    """(w_a, v_a, w_max, v_max) of one batch from a single pass of P: source a's mean weights
    (:func:`source_a_means`) and P's selection (:func:`refusion.train.validation.selection_means`)."""
    from refusion.train.validation import selection_means

    w, v = proposal(x)
    return _source_a(w, v) + selection_means(x, w, v)


def directions(fusion, proposal, recon, batches, inner_lrs, alpha1: float = 1.0, alpha2: float = 1.0,
               with_leak: bool = True):
    """(rows, cosines, (w_a, v_a, w_max, v_max)): a :class:`Direction` per inner lr (then the leak),
    {(label, label): cosine}, and the mean weights of the probes on the meta-train batches.

    ``batches``: [(train_x, train_t, test_x, test_t), ...] tensors; g is summed over them.
    """
    import torch

    from refusion.train.meta import MetaConfig, meta_gradient

    params = list(proposal.parameters())
    # Per batch: each holds its own swapped half. The batches are of one size, so the mean of means is the mean.
    means = [probe_means(proposal, b[0]) for b in batches]
    probes = [torch.stack([m[i] for m in means]).mean() for i in range(4)]  # w_a, v_a, w_max, v_max

    def grad_of(value, retain):
        gs = torch.autograd.grad(value, params, retain_graph=retain, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for g, p in zip(gs, params)]

    dw, dv, dwmax, dvmax = [grad_of(value, i < 3) for i, value in enumerate(probes)]
    labels = [float(lr) for lr in inner_lrs] + ([LEAK] if with_leak else [])
    rows, flats = [], {}
    for label in labels:
        leak = label == LEAK
        lr = float(inner_lrs[0]) if leak else label
        # The leak term alone is meta.py's leaky gradient with no meta term (meta_grad "none").
        config = MetaConfig(alpha1=alpha1, alpha2=alpha2, leak_fusion_grad=leak, meta_grad="none" if leak else "jvp")
        total = None
        for tx, tt, sx, st in batches:
            g = meta_gradient(fusion, proposal, recon, (tx, tt), (sx, st), lr, config).proposal_grads
            total = [q.detach() for q in g] if total is None else [a + q.detach() for a, q in zip(total, g)]
        flat = torch.cat([q.flatten() for q in total])
        norm = float(flat.norm())
        unit = [-q / norm if norm > 0 else torch.zeros_like(q) for q in total]
        sign = [-torch.sign(q) for q in total]
        dot = lambda a, b: float(sum((x * y).sum() for x, y in zip(a, b)))  # noqa: E731
        name = LEAK if leak else f"{label:g}"
        rows.append(Direction(name, norm, dot(dw, unit), dot(dv, unit), dot(dw, sign), dot(dv, sign),
                              dot(dwmax, unit), dot(dvmax, unit), dot(dwmax, sign), dot(dvmax, sign)))
        flats[name] = flat
    names = list(flats)
    cosines = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            cosines[(a, b)] = float(torch.nn.functional.cosine_similarity(flats[a], flats[b], dim=0))
    return rows, cosines, tuple(float(q.detach()) for q in probes)


def to_markdown(report: dict) -> str:
    roles = report["roles"]
    lines = [f"# Direction of P's meta-gradient: {report['model']}", "",
             f"{report['task']} on {report['data']}; {report['batches']} meta-train/meta-test batch pairs of "
             f"{report['crop']}x{report['crop']} crops (seed {report['seed']}).",
             f"Mean w_{roles[0]} {report['w_a']:.4f}, mean v_{roles[0]} {report['v_a']:.4f} on these batches; "
             f"w_max {report['w_max']:.4f} (the brighter source's w), v_max {report['v_max']:.4f} (the v of the "
             "source with the larger gradient).",
             f"d w, d v: first-order change of the mean weight of {roles[0]} along -g/|g| (gradient step of "
             "length 1) and along -sign(g) (Adam's first steps, every parameter moved by 1). 'leak' is "
             "dL_f/dtheta_P alone.", "",
             "| inner lr | norm of g | d w (-g/|g|) | d v (-g/|g|) | d w (-sign g) | d v (-sign g) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        lines.append(f"| {r['label']} | {r['grad_norm']:.3e} | {r['dw_sgd']:+.3e} | {r['dv_sgd']:+.3e} | "
                     f"{r['dw_sign']:+.3e} | {r['dv_sign']:+.3e} |")
    lines += ["", "Towards per-pixel selection: d w_max, d v_max along the same two step rules.", "",
              "| inner lr | d w_max (-g/|g|) | d v_max (-g/|g|) | d w_max (-sign g) | d v_max (-sign g) |",
              "|---|---:|---:|---:|---:|"]
    for r in report["rows"]:
        lines.append(f"| {r['label']} | {r['dwmax_sgd']:+.3e} | {r['dvmax_sgd']:+.3e} | {r['dwmax_sign']:+.3e} | "
                     f"{r['dvmax_sign']:+.3e} |")
    lines += ["", "| cosine | value |", "|---|---:|"]
    lines += [f"| {c['a']} / {c['b']} | {c['cosine']:+.3f} |" for c in report["cosines"]]
    return "\n".join(lines) + "\n"


@click.command("direction", context_settings=dict(HELP_SETTINGS))
@click.argument("checkpoint", required=False, type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--init", "fresh", is_flag=True, help="Freshly initialised networks (the --preset's) instead of "
              "a checkpoint.")
@click.option("--data", required=True, type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="Dataset root with train/<role>/ (the training data; no test pair is read).")
@click.option("--task", default="ivif", show_default=True, type=click.Choice(TASKS, case_sensitive=False))
@click.option("--preset", default="long", show_default=True, type=click.Choice(sorted(PRESETS)),
              help="With --init: the preset giving the networks and the crop.")
@click.option("--inner-lr", "inner_lrs", default="1e-3,1e-2,3e-2,1e-1", show_default=True,
              help="Comma-separated look-ahead steps of the inner update.")
@click.option("--crop", type=click.IntRange(min=16), default=None,
              help="Square crop of the batches [default: the checkpoint's or preset's meta crop].")
@click.option("--batches", type=click.IntRange(min=1), default=4, show_default=True,
              help="Meta-train/meta-test batch pairs summed into g.")
@click.option("--seed", default=0, show_default=True)
@click.option("--threads", default=0, show_default=True, help="CPU threads (0: the physical cores).")
@click.option("--out", "out_dir", default=str(DEFAULT_RESULTS_DIR), show_default=True,
              type=click.Path(file_okay=False), help="Folder for the JSON and markdown results.")
@click.option("-v", "--verbose", count=True)
@friendly_errors
def direction(checkpoint: Path | None, fresh: bool, data: Path, task: str, preset: str, inner_lrs: str,
              crop: int | None, batches: int, seed: int, threads: int, out_dir: str, verbose: int) -> None:
    """Which way P's meta-gradient (and the leak) moves the mean loss weights, per inner lr.

    \b
    Example:
      rfbench direction --init --data data/ivif/MSRS --inner-lr 1e-3,1e-2,1e-1
      rfbench direction runs/ivif/best.pt --data data/ivif/MSRS
    """
    import json

    setup_logging(verbose)
    if (checkpoint is None) == (not fresh):
        raise click.UsageError("give a CHECKPOINT or --init (not both)")
    try:
        lrs = [float(s) for s in inner_lrs.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(f"{inner_lrs!r} is not a comma-separated list of numbers", param_hint="--inner-lr")
    if not lrs or any(lr <= 0 for lr in lrs):
        raise click.BadParameter("give at least one positive inner lr", param_hint="--inner-lr")
    check_results_dir(out_dir)
    report = measure(checkpoint, data, task.lower(), preset, lrs, batches, seed, threads, crop)
    from .results_io import write_results

    stem = f"direction_{task}_{'init' if checkpoint is None else checkpoint.stem}"
    jp, mp = write_results(out_dir, stem, json.dumps(report, indent=2) + "\n", to_markdown(report))
    click.echo(to_markdown(report))
    click.echo(f"wrote {jp} and {mp}")


def measure(checkpoint: Path | None, data: Path, task: str, preset: str, inner_lrs: list[float], batches: int,
            seed: int, threads: int = 0, crop: int | None = None) -> dict:
    """The report ``rfbench direction`` writes (see the module docstring)."""
    import torch

    from refusion.runtime.tasks import TASK_SOURCES
    from refusion.train.checkpoint import load_checkpoint
    from refusion.train.cli import training_threads
    from refusion.train.config import preset_config
    from refusion.train.data import BatchSampler
    from refusion.train.dataset import load_training_data
    from refusion.train.trainer import build_networks, networks_from_checkpoint

    torch.set_num_threads(threads or training_threads())
    torch.manual_seed(seed)
    if checkpoint is not None:
        ckpt = load_checkpoint(checkpoint)
        if "loss_proposal" not in ckpt or "reconstruction" not in ckpt:
            raise DataError(f"{checkpoint} holds no P and R (an rftrain checkpoint has them; a released one does not)")
        config, fusion, proposal, recon = networks_from_checkpoint(
            ckpt, data=str(data), task=task, synthesize_from=None, a_dir=None, b_dir=None)
    else:
        config = preset_config(preset, task=task, data=str(data))
        fusion, proposal, recon = build_networks(config)
    crop = crop or config.meta_crop_size
    train = load_training_data(config.replace(val_pairs=0)).train
    sampler = BatchSampler(train, seed, config.pairs_per_batch, config.swap_augment, crop)
    tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    pairs = []
    for k in range(batches):
        (tx, tt), (sx, st) = sampler.batch(1, "meta", 2 * k, crop), sampler.batch(1, "meta", 2 * k + 1, crop)
        pairs.append((tensor(tx), tensor(tt), tensor(sx), tensor(st)))
    rows, cosines, (w_a, v_a, w_max, v_max) = directions(fusion, proposal, recon, pairs, inner_lrs, config.alpha1,
                                                        config.alpha2)
    return {
        "model": "initialised networks" if checkpoint is None else str(checkpoint),
        "task": task, "roles": list(TASK_SOURCES[task]), "data": str(data), "crop": crop, "batches": batches,
        "seed": seed, "w_a": w_a, "v_a": v_a, "w_max": w_max, "v_max": v_max,
        "rows": [r.__dict__ for r in rows],
        "cosines": [{"a": a, "b": b, "cosine": c} for (a, b), c in cosines.items()],
    }
