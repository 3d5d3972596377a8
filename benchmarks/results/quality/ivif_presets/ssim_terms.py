"""Session-11 analysis script (not part of the package API): SSIM's terms, per source, for models and averaging.

usage: python ssim_terms.py DATA OUT.json MODEL... (ONNX core graphs or .pt/.pth; averaging is always added)

For each source X in (infrared, visible) and each method's fused image F, the mean over the SSIM map (7x7 uniform
window, data_range 2 on 0-255, as refusion.runtime.metrics.ssim) of: ssim = l * cs; the luminance term
l = (2 ux uf + C1) / (ux^2 + uf^2 + C1); cs = (2 sxf + C2) / (sx^2 + sf^2 + C2); and its contrast part
c = (2 sx sf + C2) / (sx^2 + sf^2 + C2), so that cs = c * structure. Models' outputs are min-max normalised as in
``rfbench quality``.
"""
import json
import sys

import cv2
import numpy as np

from refusion.benchmarks.quality import baseline_method, find_pairs, model_method, source_grey
from refusion.runtime.metrics import ssim_local_moments


def terms(x: np.ndarray, f: np.ndarray) -> dict[str, float]:
    ux, uf, vx, vf, vxf, p = ssim_local_moments(x, f)  # 7x7 uniform window, as the SSIM metric
    c1, c2 = 0.02 ** 2, 0.06 ** 2  # (k * data_range)^2 with data_range 2, as the SSIM metric
    lum = (2 * ux * uf + c1) / (ux * ux + uf * uf + c1)
    cs = (2 * vxf + c2) / (vx + vf + c2)
    con = (2 * np.sqrt(np.maximum(vx, 0) * np.maximum(vf, 0)) + c2) / (vx + vf + c2)
    crop = (slice(p, -p), slice(p, -p))
    return {"ssim": float((lum * cs)[crop].mean()), "l": float(lum[crop].mean()), "cs": float(cs[crop].mean()),
            "c": float(con[crop].mean())}


def main(data: str, out: str, models: list[str]) -> None:
    methods = [model_method(m, "ivif") for m in models] + [baseline_method("average")]
    sums: dict[str, dict[str, dict[str, list[float]]]] = {}
    pairs = find_pairs(data, "ivif")
    for pair in pairs:
        a, b = cv2.imread(str(pair.path_a)), cv2.imread(str(pair.path_b))
        sources = {"ir": source_grey(a), "vis": source_grey(b)}
        for meth in methods:
            fused, _ = meth.fuse(a, b)
            for role, src in sources.items():
                for key, value in terms(src, fused).items():
                    sums.setdefault(meth.label, {}).setdefault(role, {}).setdefault(key, []).append(value)
    table = {m: {r: {k: float(np.mean(v)) for k, v in d.items()} for r, d in rs.items()} for m, rs in sums.items()}
    json.dump({"data": data, "pairs": len(pairs), "terms": table}, open(out, "w"), indent=1)
    for m, rs in table.items():
        for r, d in rs.items():
            print(m, r, " ".join(f"{k}={v:.4f}" for k, v in d.items()))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
