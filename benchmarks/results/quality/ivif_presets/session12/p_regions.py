"""Session-12 analysis script (not part of the package API): how strongly P selects, by how much texture is there.

usage: python p_regions.py DATA OUT.json CHECKPOINT...   (rftrain checkpoints, which hold P)

Pixels are classed as in ssim_regions.py (s = max of the two sources' 7x7 local std, in grey levels: flat < 2,
low < 6, mid < 15, strong >= 15). Per class: the mean of v_ir and of max(v_ir, 1 - v_ir) (how strongly the gradient
term picks one source; 0.5 = an even blend), and the same for w, for each checkpoint's P and for the warm start's
rule (train/prior.py) at T_v = 0.1 and 0.3, and at T_w = T_v = 0.1 and 0.3. Images at full size, in [0, 1].
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from refusion.runtime.imageio import pair_folders
from refusion.train.checkpoint import load_checkpoint
from refusion.train.data import load_pairs
from refusion.train.prior import selection_prior
from refusion.train.trainer import networks_from_checkpoint

EDGES = (2.0, 6.0, 15.0)
NAMES = ("flat", "low", "mid", "strong")


def local_std(x: np.ndarray) -> np.ndarray:
    mu = ndimage.uniform_filter(x, 7)
    return np.sqrt(np.maximum(ndimage.uniform_filter(x * x, 7) - mu * mu, 0))


def main(data: str, out: str, ckpts: list[str]) -> None:
    torch.set_num_threads(1)
    root = Path(data)
    pairs = load_pairs(pair_folders(root / "ir", root / "vis"), 100000)
    props = {}
    for c in ckpts:
        _, _, proposal, _ = networks_from_checkpoint(load_checkpoint(c), data=data)
        props[c] = proposal.eval()
    acc: dict = {}
    with torch.no_grad():
        for a, b in zip(pairs.a, pairs.b):
            cls = np.digitize(np.maximum(local_std(a * 255.0), local_std(b * 255.0)), EDGES)
            x = torch.from_numpy(np.stack([a, b])[None]).float()
            wv = {name: p(x) for name, p in props.items()}
            for t in (0.1, 0.3):
                wv[f"rule T_v={t}"] = selection_prior(x, temperature_v=t)
                wv[f"rule T_w=T_v={t}"] = selection_prior(x, t, t)
            for name, (w, v) in wv.items():
                w, v = w[0, 0].numpy(), v[0, 0].numpy()
                for k, n in enumerate(NAMES):
                    sel = cls == k
                    if sel.any():
                        d = acc.setdefault(name, {}).setdefault(n, {"w_ir": [], "w_max": [], "v_ir": [], "v_max": []})
                        for key, m in (("w", w), ("v", v)):
                            d[f"{key}_ir"].append(float(m[sel].mean()))
                            d[f"{key}_max"].append(float(np.maximum(m[sel], 1 - m[sel]).mean()))
    table = {name: {n: {k: float(np.mean(x)) for k, x in d.items()} for n, d in cl.items()} for name, cl in acc.items()}
    json.dump({"data": data, "pairs": len(pairs.a), "std_edges": EDGES, "v": table}, open(out, "w"), indent=1)
    for name, cl in table.items():
        print(name, " | ".join(f"{n}: " + " ".join(f"{k} {x:.3f}" for k, x in d.items()) for n, d in cl.items()))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
