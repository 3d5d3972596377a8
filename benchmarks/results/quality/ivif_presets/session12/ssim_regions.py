"""Session-12 analysis script (not part of the package API): where in the image each method wins or loses SSIM.

usage: python ssim_regions.py DATA OUT.json MODEL... (ONNX core graphs or .pt/.pth; averaging is always added)

Every pixel of the SSIM map (7x7 uniform window, data_range 2 on 0-255, as refusion.runtime.metrics.ssim) is put in
a class by how much structure the two sources have there: s = max(local std of infrared, local std of visible),
in grey levels, over the same 7x7 window: flat s < 2, low 2 <= s < 6, mid 6 <= s < 15, strong s >= 15. For each
class the script reports its share of the pixels and, per method and source, the mean SSIM there, so that
share * mean summed over the classes is the SSIM half the quality table reports. Models' outputs are min-max
normalised as in ``rfbench quality``.
"""
import json
import sys

import cv2
import numpy as np

from refusion.benchmarks.quality import baseline_method, find_pairs, model_method, source_grey
from refusion.runtime.metrics import ssim_local_moments

EDGES = (2.0, 6.0, 15.0)
NAMES = ("flat", "low", "mid", "strong")


def ssim_map(x: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, int]:
    ux, uf, vx, vf, vxf, p = ssim_local_moments(x, f)
    c1, c2 = 0.02 ** 2, 0.06 ** 2  # (k * data_range)^2 with data_range 2, as the SSIM metric
    return ((2 * ux * uf + c1) * (2 * vxf + c2)) / ((ux * ux + uf * uf + c1) * (vx + vf + c2)), p


def structure_classes(ir: np.ndarray, vis: np.ndarray) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Class (index into NAMES) of every pixel of the SSIM map, and the border crop both take."""
    _, _, v_ir, v_vis, _, p = ssim_local_moments(ir, vis)  # the SSIM metric's own local variances
    crop = (slice(p, -p), slice(p, -p))
    return np.digitize(np.sqrt(np.maximum(np.maximum(v_ir, v_vis), 0))[crop], EDGES), crop


def main(data: str, out: str, models: list[str]) -> None:
    methods = [model_method(m, "ivif") for m in models] + [baseline_method("average")]
    acc: dict = {}
    share: dict[str, list[float]] = {n: [] for n in NAMES}
    pairs = find_pairs(data, "ivif")
    for pair in pairs:
        a, b = cv2.imread(str(pair.path_a)), cv2.imread(str(pair.path_b))
        src = {"ir": source_grey(a), "vis": source_grey(b)}
        fused = {m.label: m.fuse(a, b)[0] for m in methods}
        cls, crop = structure_classes(src["ir"], src["vis"])
        for k, n in enumerate(NAMES):
            share[n].append(float((cls == k).mean()))
        for (lab, f), (r, x) in ((lf, rx) for lf in fused.items() for rx in src.items()):
            s = ssim_map(x, f)[0][crop]
            for k, n in enumerate(NAMES):
                # per image: sum of SSIM over the class / pixels of the image, so the classes add up to the mean
                acc.setdefault(lab, {}).setdefault(r, {}).setdefault(n, []).append(float(s[cls == k].sum() / s.size))
    table = {
        "pairs": len(pairs), "data": data, "std_edges": EDGES,
        "share": {n: float(np.mean(v)) for n, v in share.items()},
        # contribution: mean over images of (sum of SSIM in the class / pixels): adds up to the SSIM half
        "contribution": {lab: {r: {n: float(np.mean(v)) for n, v in d.items()} for r, d in rs.items()}
                         for lab, rs in acc.items()},
    }
    json.dump(table, open(out, "w"), indent=1)
    print("share", " ".join(f"{n}={v:.3f}" for n, v in table["share"].items()))
    for lab, rs in table["contribution"].items():
        for r, d in rs.items():
            print(lab, r, " ".join(f"{n}={v:.4f}" for n, v in d.items()), f"total={sum(d.values()):.4f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
