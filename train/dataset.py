"""What a training run trains and validates on: a TrainConfig's folders (or synthetic pairs)
resolved into training pairs and held-out validation pairs."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refusion.runtime.errors import DataError
from refusion.runtime.imageio import pair_folders

from .data import PairSet, downscale, load_pairs
from .synth import synthesize_pairs


def _folder(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise DataError(f"{what} folder not found: {p}")
    return p


@dataclass
class TrainData:
    train: PairSet
    val: PairSet
    val_note: str  # where the validation pairs come from


def load_training_data(config) -> TrainData:
    """Resolve the folders of a TrainConfig and load training and validation pairs."""
    ra, rb = config.roles
    val: PairSet | None = None
    note = ""
    if config.synthesize_from:
        train = synthesize_pairs(config.synthesize_from, config.synth_pairs, config.seed, min_side=config.crop)
    else:
        if config.a_dir:
            a_dir, b_dir = Path(config.a_dir), Path(config.b_dir)
        else:
            root = _folder(config.data, "dataset root")
            a_dir, b_dir = root / config.train_split / ra, root / config.train_split / rb
            if not (root / config.train_split).is_dir():
                splits = sorted(p.name for p in root.iterdir() if p.is_dir())
                raise DataError(
                    f"no {config.train_split!r} split in {root} (found: {', '.join(splits) or 'nothing'}); "
                    f"expected {root}/{config.train_split}/{ra} and .../{rb}"
                )
        found = pair_folders(a_dir, b_dir)
        if config.val_from_train and not (config.val_a_dir and config.val_b_dir):
            kept, held = split_holdout(found, config.val_from_train)
            if config.val_pairs:
                val = load_pairs(held, config.val_max_side)
                note = f"{len(val)} training pairs held out of {a_dir.parent} (not trained on)"
            found = kept
        train = load_pairs(found)
    if config.val_pairs and val is None:
        vdirs = None
        if config.val_a_dir and config.val_b_dir:
            vdirs = (Path(config.val_a_dir), Path(config.val_b_dir))
        elif config.data and (Path(config.data) / config.val_split / ra).is_dir():
            root = Path(config.data)
            vdirs = (root / config.val_split / ra, root / config.val_split / rb)
        if vdirs is not None:
            found = pair_folders(*vdirs)
            # Evenly spaced held-out pairs, so a handful covers the whole split.
            idx = np.linspace(0, len(found) - 1, min(config.val_pairs, len(found))).round().astype(int)
            val = load_pairs([found[i] for i in sorted(set(idx.tolist()))], config.val_max_side)
            note = f"{len(val)} pairs from {vdirs[0].parent}"
        else:
            k = min(config.val_pairs, len(train))
            val = train.subset(list(range(k)))
            val = PairSet(val.names, [downscale(x, config.val_max_side) for x in val.a],
                          [downscale(x, config.val_max_side) for x in val.b])
            note = f"{k} training pairs (no held-out folder found)"
    return TrainData(train, val or PairSet([], [], []), note)


def split_holdout(found: list, k: int) -> tuple[list, list]:
    """(kept, held): ``k`` pairs evenly spaced over the name-sorted list are held out; at least one stays."""
    if k >= len(found):
        raise DataError(f"cannot hold out {k} validation pairs from {len(found)} training pairs; "
                        "lower --val-from-train")
    idx = set(np.linspace(0, len(found) - 1, k + 2)[1:-1].round().astype(int).tolist())
    return [p for i, p in enumerate(found) if i not in idx], [p for i, p in enumerate(found) if i in idx]

