"""PyTorch-on-GPU probe: F's latency (eager FP32/FP16, compiled) and the FP16 overflow, on real weights.

Run on a CUDA machine:  python -m refusion.benchmarks.gpu_torch_probe --weights W.pth --ir IR.png --vis VIS.png
Prints one JSON object (device named) with per-size median milliseconds measured with CUDA events after
warm-up, and each variant's max abs error against FP32 on the same input.
"""
from __future__ import annotations

import argparse
import json
import platform

import numpy as np
import torch
import torch.nn.functional as F

from refusion.runtime.colour import luma_bgr
from refusion.runtime.imageio import read_image
from refusion.train import networks
from refusion.train.checkpoint import load_fusion_model

SIZES = [(256, 256), (480, 640), (720, 1280), (1080, 1920)]


def median_ms(fn, x, warmup: int = 5, iters: int = 30) -> float:
    with torch.no_grad():
        for _ in range(warmup):
            fn(x)
        torch.cuda.synchronize()
        times = []
        for _ in range(iters):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn(x)
            e.record()
            torch.cuda.synchronize()
            times.append(s.elapsed_time(e))
    return float(np.median(times))


def naive_half_normalize(x: torch.Tensor) -> torch.Tensor:
    """All-FP16 L2 normalisation: the sum of squares is stored in float16 (what an unprotected engine does)."""
    ss = (x * x).sum(dim=-1, keepdim=True, dtype=torch.float32).to(x.dtype)
    return x / torch.sqrt(ss).clamp_min(1e-4)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--ir", required=True)
    ap.add_argument("--vis", required=True)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    dev = torch.device("cuda")
    net = load_fusion_model(args.weights, "ivif").net.to(dev).eval()
    half = load_fusion_model(args.weights, "ivif").net.to(dev).eval().half()
    ya, yb = luma_bgr(read_image(args.ir)), luma_bgr(read_image(args.vis))
    base = torch.from_numpy(np.stack([ya, yb]))[None].to(dev)
    compiled = torch.compile(net) if args.compile else None
    rows = []
    for h, w in SIZES:
        x = F.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
        with torch.no_grad():
            ref = net(x)
            out16 = half(x.half()).float()
            orig = networks.l2_normalize_spatial
            networks.l2_normalize_spatial = naive_half_normalize
            try:
                naive = half(x.half()).float()
            finally:
                networks.l2_normalize_spatial = orig
        row = {
            "size": [h, w],
            "fp32_eager_ms": median_ms(net, x),
            "fp16_islands_eager_ms": median_ms(half, x.half()),
            "fp16_islands_max_err": float((out16 - ref).abs().max()),
            "fp16_naive_max_err": float((naive - ref).abs().max()),
            "fp16_naive_nonfinite": int((~torch.isfinite(naive)).sum()),
        }
        if compiled is not None:
            row["fp32_compiled_ms"] = median_ms(compiled, x)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps({
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "rows": rows,
    }))


if __name__ == "__main__":
    main()
