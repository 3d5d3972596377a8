"""Issue-10 item 3: does bfloat16 autocast, channels-last or torch.compile make a training
step faster on this CPU, with unchanged results? Times the fusion step and the jvp meta
step of each variant in one process, against plain float32 in the same run, and reports
the largest loss difference to float32 (from identical initial weights and data).

Run: ``python -m refusion.benchmarks.train_variants --size 96 --threads 2 --out DIR``.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variants", default="fp32,bf16,channels_last,compile")
    ap.add_argument("--out", required=True, help="folder for the JSON and markdown results")
    args = ap.parse_args()

    import torch

    from refusion.train.config import TrainConfig
    from refusion.train.trainer import build_networks

    torch.set_num_threads(args.threads)
    base = build_networks(TrainConfig(data="-", seed=0))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 2, args.size, args.size, generator=g)
    y = torch.rand(args.batch, 2, args.size, args.size, generator=g)
    rows: list[dict] = []
    ref: dict[str, float] = {}
    for variant in args.variants.split(","):
        rows.append(_time_variant(torch, variant, base, x, y, args.repeats, ref))
        print(json.dumps(rows[-1]), flush=True)
    report = {"torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
              "threads": args.threads, "size": args.size, "batch": args.batch, "rows": rows,
              "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"train_variants_cpu_crop{args.size}_torch{torch.__version__.replace('+', '-')}"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = _markdown(args, report)
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _time_variant(torch: Any, variant: str, base: Any, x: Any, y: Any, repeats: int, ref: dict[str, float]) -> dict:
    """One row: the fusion and meta step of ``variant`` timed (median of ``repeats`` after a warm-up),
    their losses relative to the first variant's (``ref``, filled by the first row)."""
    from refusion.train.meta import MetaConfig, MetaLearner

    nets = [copy.deepcopy(m) for m in base]
    xx, yy = x, y
    ctx = contextlib.nullcontext
    if variant == "bf16":
        ctx = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    elif variant == "channels_last":
        nets = [m.to(memory_format=torch.channels_last) for m in nets]
        xx, yy = (t.contiguous(memory_format=torch.channels_last) for t in (x, y))
    elif variant == "compile":
        nets = [torch.compile(m) for m in nets]
    learner = MetaLearner(*nets, MetaConfig(lr=1e-4))
    row: dict[str, Any] = {"variant": variant}
    for step, fn in (("fusion", lambda: learner.fusion_step(xx, xx)),
                     ("meta", lambda: learner.meta_step(xx, xx, yy, yy))):
        try:
            with ctx():
                t0 = time.perf_counter()
                first = fn()  # warm-up (and compile)
                row[f"{step}_first_s"] = time.perf_counter() - t0
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t0)
            row[f"{step}_s"] = statistics.median(times)
            loss = float(first["loss_f" if step == "fusion" else "meta_loss"])
            ref.setdefault(step, loss)
            row[f"{step}_loss_rel_diff"] = abs(loss - ref[step]) / abs(ref[step])
        except Exception as exc:  # a variant that cannot run is reported, not fatal
            row[f"{step}_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return row


def _markdown(args: argparse.Namespace, report: dict) -> list[str]:
    """The markdown table of the report, speeds relative to the fp32 row."""
    rows = report["rows"]
    fp32 = {r["variant"]: r for r in rows}.get("fp32", {})
    lines = [f"# Training-step variants on the CPU ({args.threads} threads, batch {args.batch} x {args.size}x{args.size})",
             "", f"torch {report['torch']}, {report['time']}; median of {args.repeats} after one warm-up step",
             "", "| variant | fusion step (s) | vs fp32 | meta step (s) | vs fp32 | loss rel. diff (fusion, meta) | first step (s) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        def cell(step: str) -> tuple[str, str]:
            if f"{step}_s" not in r:
                return r.get(f"{step}_error", "-"), "-"
            ratio = fp32.get(f"{step}_s", 0) / r[f"{step}_s"] if fp32.get(f"{step}_s") else 0
            return f"{r[f'{step}_s']:.3f}", f"{ratio:.2f}x"
        fs, fr = cell("fusion")
        ms, mr = cell("meta")
        diffs = f"{r.get('fusion_loss_rel_diff', float('nan')):.1e}, {r.get('meta_loss_rel_diff', float('nan')):.1e}"
        first = f"{r.get('fusion_first_s', float('nan')):.1f}, {r.get('meta_first_s', float('nan')):.1f}"
        lines.append(f"| {r['variant']} | {fs} | {fr} | {ms} | {mr} | {diffs} | {first} |")
    return lines


if __name__ == "__main__":
    main()
