"""Experiment wrapper of session 11 (not part of the package API): rftrain with batch augmentation.

usage: python augment_wrapper.py MODE RFTRAIN-ARGS...   MODE: geo (rot90 + flip), photo (per-source gamma in
[0.7, 1.4], log-uniform), both. Each pair is augmented before the a/b swap; R's targets are the augmented pair.
The session-11 runs: ``python augment_wrapper.py photo ivif --data ../shared/data/ivif/MSRS --out RUN --resume
--epochs 11 --threads 1`` with RUN/last.pt a copy of train/models/ivif.pt.
"""
import sys
import numpy as np
from refusion.train import data as D

MODE = sys.argv.pop(1)
orig = D.BatchSampler.batch


def batch(self, epoch, phase, index, crop):
    sw = self.swap
    self.swap = False
    try:
        ab, _ = orig(self, epoch, phase, index, crop)
    finally:
        self.swap = sw
    rng = np.random.default_rng([self.seed, epoch, D.PHASE_IDS[phase], index * self.world + self.rank, 11])
    out = []
    for s in ab:
        k, flip = int(rng.integers(4)), rng.random() < 0.5
        g = np.exp(rng.uniform(np.log(0.7), np.log(1.4), size=2))
        if MODE in ("geo", "both"):
            s = np.rot90(s, k, axes=(1, 2))
            if flip:
                s = s[:, :, ::-1]
        if MODE in ("photo", "both"):
            s = np.clip(s, 0.0, 1.0) ** g[:, None, None]
        out.append(s)
    ab = np.ascontiguousarray(np.stack(out)).astype(np.float32)
    if not sw:
        return ab, ab
    return np.concatenate([ab, ab[:, ::-1]]), np.concatenate([ab, ab])


D.BatchSampler.batch = batch
from refusion.train.cli import main  # noqa: E402

main()
