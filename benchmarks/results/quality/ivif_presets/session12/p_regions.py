"""Session-12 analysis script (not part of the package API): how strongly P selects, by how much texture is there.

usage: python p_regions.py DATA OUT.json CHECKPOINT...   (rftrain checkpoints, which hold P)

Pixels are classed by ssim_regions.py's own function (s = max of the two sources' 7x7 local std, in grey levels:
flat < 2, low < 6, mid < 15, strong >= 15; the SSIM map's border is left out). Per class: the mean of v_ir and of
max(v_ir, 1 - v_ir) (how strongly the gradient term picks one source; 0.5 = an even blend), and the same for w, for
each checkpoint's P and for the warm start's rule (train/prior.py) at T_v = 0.1 and 0.3, and at T_w = T_v = 0.1 and
0.3. P sees the images at full size, in [0, 1], as in training.
"""
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from ssim_regions import EDGES, NAMES, structure_classes  # this folder: the same classes as the SSIM split

from refusion.benchmarks.quality import source_grey
from refusion.runtime.imageio import pair_folders
from refusion.train.checkpoint import load_checkpoint
from refusion.train.data import read_y
from refusion.train.prior import selection_prior
from refusion.train.trainer import networks_from_checkpoint


def main(data: str, out: str, ckpts: list[str]) -> None:
    torch.set_num_threads(1)
    root = Path(data)
    pairs = pair_folders(root / "ir", root / "vis")
    props = {}
    for c in ckpts:
        _, _, proposal, _ = networks_from_checkpoint(load_checkpoint(c), data=data)
        props[c] = proposal.eval()
    acc: dict = {}
    with torch.no_grad():
        for _, path_a, path_b in pairs:
            cls, crop = structure_classes(source_grey(cv2.imread(str(path_a))), source_grey(cv2.imread(str(path_b))))
            x = torch.from_numpy(np.stack([read_y(path_a), read_y(path_b)])[None]).float()  # as P sees them in training
            wv = {name: p(x) for name, p in props.items()}
            for t in (0.1, 0.3):
                wv[f"rule T_v={t}"] = selection_prior(x, temperature_v=t)
                wv[f"rule T_w=T_v={t}"] = selection_prior(x, t, t)
            for name, (w, v) in wv.items():
                w, v = w[0, 0].numpy()[crop], v[0, 0].numpy()[crop]
                for k, n in enumerate(NAMES):
                    sel = cls == k
                    if sel.any():
                        d = acc.setdefault(name, {}).setdefault(n, {"w_ir": [], "w_max": [], "v_ir": [], "v_max": []})
                        for key, m in (("w", w), ("v", v)):
                            d[f"{key}_ir"].append(float(m[sel].mean()))
                            d[f"{key}_max"].append(float(np.maximum(m[sel], 1 - m[sel]).mean()))
    table = {name: {n: {k: float(np.mean(x)) for k, x in d.items()} for n, d in cl.items()} for name, cl in acc.items()}
    json.dump({"data": data, "pairs": len(pairs), "std_edges": EDGES, "v": table}, open(out, "w"), indent=1)
    for name, cl in table.items():
        print(name, " | ".join(f"{n}: " + " ".join(f"{k} {x:.3f}" for k, x in d.items()) for n, d in cl.items()))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
