"""What a training run trains and validates on: a TrainConfig's folders (or synthetic pairs)
resolved into training pairs and held-out validation pairs."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refusion.runtime.errors import DataError
from refusion.runtime.imageio import pair_folders

from .data import PairSet, load_pairs
from .synth import image_files, synthesize_pairs


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
    if config.synthesize_from:
        train, val, note = _synthetic_data(config)
    else:
        train, val, note = _real_data(config, _train_folders(config, required=True))
    if config.val_pairs and val is None:
        val, note = _fallback_validation(config, train)
    return TrainData(train, val or PairSet([], [], []), note)


def _train_folders(config, required: bool) -> tuple[Path, Path] | None:
    """The (a, b) training folders of --a-dir/--b-dir or --data; None when not ``required`` and absent."""
    ra, rb = config.roles
    if config.a_dir:
        return Path(config.a_dir), Path(config.b_dir)
    if config.data is None:
        return None
    root = _folder(config.data, "dataset root")
    if not (root / config.train_split).is_dir():
        if not required:
            return None
        splits = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DataError(
            f"no {config.train_split!r} split in {root} (found: {', '.join(splits) or 'nothing'}); "
            f"expected {root}/{config.train_split}/{ra} and .../{rb}"
        )
    return root / config.train_split / ra, root / config.train_split / rb


def _real_data(config, folders: tuple[Path, Path]) -> tuple[PairSet, PairSet | None, str]:
    """Training pairs of two folders, with --val-from-train pairs held out of them."""
    found = pair_folders(*folders)
    val, note = None, ""
    if config.val_from_train and not (config.val_a_dir and config.val_b_dir):
        found, held = split_holdout(found, config.val_from_train)
        if config.val_pairs:
            val = load_pairs(held, config.val_max_side)
            note = f"{len(val)} training pairs held out of {folders[0].parent} (not trained on)"
    return load_pairs(found), val, note


def _synthetic_data(config) -> tuple[PairSet, PairSet | None, str]:
    """Pairs synthesised from the images of --synthesize-from; --val-from-train holds out whole images (their
    pairs are made with another seed); real training pairs of --data/--a-dir, when there are any, are added."""
    files = image_files(config.synthesize_from)
    val, note = None, ""
    if config.val_from_train:
        files, held = split_holdout(files, config.val_from_train)
        if config.val_pairs:
            val = synthesize_pairs(held, 0, config.seed + 1, task=config.task).downscaled(config.val_max_side)
            note = f"{len(val)} pairs synthesised from images held out of {config.synthesize_from} (not trained on)"
    train = synthesize_pairs(files, config.synth_pairs, config.seed, min_side=config.crop, task=config.task)
    folders = _train_folders(config, required=False)
    if folders is not None:
        real = load_pairs(pair_folders(*folders))
        train = PairSet(train.names + real.names, train.a + real.a, train.b + real.b)
    return train, val, note


def _fallback_validation(config, train: PairSet) -> tuple[PairSet, str]:
    """Validation pairs from --val-a-dir/--val-b-dir or <data>/<val split>, else the first training pairs."""
    ra, rb = config.roles
    vdirs = None
    if config.val_a_dir and config.val_b_dir:
        vdirs = (Path(config.val_a_dir), Path(config.val_b_dir))
    elif config.data and (Path(config.data) / config.val_split / ra).is_dir():
        root = Path(config.data)
        vdirs = (root / config.val_split / ra, root / config.val_split / rb)
    if vdirs is not None:
        # Evenly spaced held-out pairs, so a handful covers the whole split.
        val = load_pairs(evenly_spaced(pair_folders(*vdirs), config.val_pairs), config.val_max_side)
        return val, f"{len(val)} pairs from {vdirs[0].parent}"
    k = min(config.val_pairs, len(train))
    val = train.subset(list(range(k))).downscaled(config.val_max_side)
    return val, f"{k} training pairs (no held-out folder found)"


def evenly_spaced(items: list, n: int) -> list:
    """``n`` items (all when fewer) evenly spaced over ``items``, first and last included, in order."""
    idx = np.linspace(0, len(items) - 1, min(n, len(items))).round().astype(int)
    return [items[i] for i in sorted(set(idx.tolist()))]


def split_holdout(found: list, k: int) -> tuple[list, list]:
    """(kept, held): ``k`` pairs (or images) evenly spaced over the name-sorted list are held out; at least
    one stays."""
    if k >= len(found):
        raise DataError(f"cannot hold out {k} validation pairs from {len(found)} training pairs (or images); "
                        "lower --val-from-train")
    idx = set(np.linspace(0, len(found) - 1, k + 2)[1:-1].round().astype(int).tolist())
    return [p for i, p in enumerate(found) if i not in idx], [p for i, p in enumerate(found) if i in idx]

