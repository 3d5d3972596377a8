"""``rfbench panels``: what a trained model's loss-proposal network P asks for, on test pairs.

One row per pair: source a | source b | fused | w_a | v_a (the weights of source a in L_f's intensity and
gradient terms; b gets 1 - w_a, 1 - v_a), as the paper's Figs. 8-12 show them. Needs a refusion checkpoint
(``rftrain``'s, which holds P); the authors' release has F only.
"""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from refusion.runtime.clitools import HELP_SETTINGS, friendly_errors, setup_logging
from refusion.runtime.errors import DataError
from refusion.runtime.tasks import TASK_SOURCES

from .quality import TASKS


def wv_panels(checkpoint: Path, data: Path, task: str, pairs: int = 3, max_side: int = 512) -> np.ndarray:
    """uint8 BGR image: the panels of ``pairs`` pairs evenly spaced over the split ``data``, stacked."""
    import torch

    from refusion.runtime.imageio import pair_folders
    from refusion.train.checkpoint import load_checkpoint
    from refusion.train.data import load_pairs
    from refusion.train.dataset import evenly_spaced
    from refusion.runtime.colour import normalise_output
    from refusion.train.panels import make_panel
    from refusion.train.trainer import networks_from_checkpoint

    ckpt = load_checkpoint(checkpoint)
    if "loss_proposal" not in ckpt:
        raise DataError(f"{checkpoint} holds no loss-proposal network P (an rftrain checkpoint has one)")
    _, fusion, proposal, _ = networks_from_checkpoint(ckpt, data=str(data))
    fusion.eval()
    proposal.eval()
    roles = TASK_SOURCES[task]
    found = pair_folders(data / roles[0], data / roles[1])
    chosen = load_pairs(evenly_spaced(found, pairs), max_side)
    rows = []
    with torch.no_grad():
        for name, a, b in zip(chosen.names, chosen.a, chosen.b):
            x = torch.from_numpy(np.stack([a, b])[None])
            fused = normalise_output(fusion(x)[0, 0].numpy())
            w, v = proposal(x)
            rows.append(make_panel(a, b, fused, w[0, 0].numpy(), v[0, 0].numpy(), roles, f"{task} {name}"))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.vstack(rows)


@click.command("panels", context_settings=dict(HELP_SETTINGS))
@click.argument("checkpoint", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--task", required=True, type=click.Choice(TASKS, case_sensitive=False), help="Fusion task.")
@click.option("--data", required=True, type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="Split folder with the two role folders.")
@click.option("--pairs", type=click.IntRange(min=1), default=3, show_default=True,
              help="Pairs shown, evenly spaced over the split.")
@click.option("-o", "--out", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="Image file to write (.jpg or .png).")
@click.option("--overwrite", is_flag=True, help="Replace OUT when it exists.")
@click.option("-v", "--verbose", count=True)
@friendly_errors
def panels(checkpoint: Path, task: str, data: Path, pairs: int, out: Path, overwrite: bool, verbose: int) -> None:
    """Draw P's learned weights w and v on test pairs of DATA: sources | fused | w_a | v_a per row.

    \b
    Example:
      rfbench panels train/models/mif.pt --task mif --data data/mif/Harvard/test -o mif_wv.jpg
    """
    from refusion.runtime.fsutil import check_writable
    from refusion.runtime.imageio import write_image

    setup_logging(verbose)
    if out.exists() and not overwrite:
        raise click.ClickException(f"{out} exists; pass --overwrite to replace it")
    check_writable(out, "panel image")
    write_image(out, wv_panels(checkpoint, data, task.lower(), pairs))
    click.echo(f"wrote {out}")
