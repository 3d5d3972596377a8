"""Where one forward of F spends its time: ``torch.profiler`` tables of one frame, per precision.

For each precision (FP32 eager; FP16 with the float32 islands, as the exported FP16 graphs
and rfrun's torch backend run it) one warmed-up forward at one frame size is profiled:

- ``kernels``: the device kernels (CUDA) by total time, with call count and share: the
  list to read first when a forward is far above its memory-traffic floor;
- ``ops``: the aten operators grouped by input shape, by self device time (self CPU time
  on the CPU), i.e. which layer launched the slow kernels.

The wall time of the profiled forward is reported next to a plain (unprofiled) one.
Beside them, :func:`candidate_timings` times the suspect operations at their real shapes
against candidate rewrites, so that one GPU session shows both where the time goes and what a
rewrite would buy. Library function :func:`profile_forward`; CLI ``rfbench profile``.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from refusion.runtime._deps import require
from refusion.runtime.errors import RefusionError
from refusion.runtime.fsutil import atomic_write_text
from refusion.runtime.progress import Progress
from refusion.runtime.size import Size



@dataclass(frozen=True)
class ProfileConfig:
    """What ``rfbench profile`` measures."""

    model: Path  # our checkpoint (*.pt) or an authors' .pth
    task: str | None = None  # for the authors' .pth files
    size: Size = Size(480, 640)  # the profiled frame
    device: str = "cuda"  # "cuda" or "cpu" (the CPU run is the dry run of the GPU check)
    precisions: tuple[str, ...] = ("fp32", "fp16")
    warmup: int = 3  # unprofiled forwards first (cuDNN algorithm choice, allocator)
    row_limit: int = 25  # rows per table
    candidates: bool = True  # also time candidate rewrites of the suspect ops (:func:`candidate_timings`)


def _time(evt: Any, *names: str) -> float:
    """The first of ``names`` that the event has (torch renamed cuda_* to device_* in 2.x), in us."""
    for name in names:
        value = getattr(evt, name, None)
        if value is not None:
            return float(value)
    return 0.0


def profile_forward(config: ProfileConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Profile one forward of F per precision; returns {config, device, torch, runs: [...]}.

    Each run: precision, wall_ms (plain forward, synchronised), profiled_wall_ms, kernels
    (name, calls, total_us, share), ops (name, input shapes, calls, self_us), and the
    profiler's own text table (``table``).
    """
    torch = require("torch", "the kernel profile")
    from torch.profiler import ProfilerActivity, profile

    from refusion.train.checkpoint import load_fusion_model

    say = (progress or Progress()).message
    cuda = config.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise RefusionError("rfbench profile --device cuda: torch sees no GPU")
    dev = torch.device(config.device)
    h, w = config.size
    g = torch.Generator().manual_seed(0)
    x32 = torch.rand(1, 2, h, w, generator=g).to(dev)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    runs = []
    for precision in config.precisions:
        if precision not in ("fp32", "fp16"):
            raise RefusionError(f"precision must be fp32 or fp16, not {precision!r}")
        net = load_fusion_model(config.model, config.task).net.eval().to(dev)
        x = x32
        if precision == "fp16":
            net, x = net.half(), x32.half()  # l2_normalize_spatial keeps its float32 island
        with torch.inference_mode():
            for _ in range(max(1, config.warmup)):
                net(x)
            sync()
            t0 = time.perf_counter()
            net(x)
            sync()
            wall = (time.perf_counter() - t0) * 1e3
            with profile(activities=activities, record_shapes=True) as prof:
                t0 = time.perf_counter()
                net(x)
                sync()
                prof_wall = (time.perf_counter() - t0) * 1e3
        runs.append(_summarise(prof, precision, wall, prof_wall, cuda, config.row_limit, torch))
        say(f"{precision}: forward {wall:.2f} ms, {len(runs[-1]['kernels'])} kernel names")
    cands = candidate_timings(config.size, config.device) if config.candidates else []
    return {
        "candidates": cands,
        "config": {**asdict(config), "model": str(config.model)},
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "runs": runs,
    }


def _summarise(prof: Any, precision: str, wall: float, prof_wall: float, cuda: bool, limit: int, torch: Any) -> dict:
    self_key = ("self_device_time_total", "self_cuda_time_total") if cuda else ("self_cpu_time_total",)
    total_key = ("device_time_total", "cuda_time_total") if cuda else ("cpu_time_total",)
    kernels = []
    if cuda:
        dev_type = torch.autograd.DeviceType.CUDA
        evts = [e for e in prof.key_averages() if getattr(e, "device_type", None) == dev_type]
        all_us = sum(_time(e, *self_key) for e in evts) or 1.0
        for e in sorted(evts, key=lambda e: _time(e, *self_key), reverse=True)[:limit]:
            us = _time(e, *self_key)
            kernels.append({"name": e.key, "calls": int(e.count), "total_us": round(us, 1),
                            "share": round(us / all_us, 4)})
    ops = []
    grouped = [e for e in prof.key_averages(group_by_input_shape=True) if e.key.startswith("aten::")]
    for e in sorted(grouped, key=lambda e: _time(e, *self_key), reverse=True)[:limit]:
        ops.append({"name": e.key, "shapes": str(e.input_shapes), "calls": int(e.count),
                    "self_us": round(_time(e, *self_key), 1), "total_us": round(_time(e, *total_key), 1)})
    sort_by = self_key[0] if cuda else "self_cpu_time_total"
    try:
        table = prof.key_averages().table(sort_by=sort_by, row_limit=limit)
    except (AttributeError, KeyError, ValueError):  # older torch names the column cuda_*
        table = prof.key_averages().table(sort_by=self_key[-1], row_limit=limit)
    return {"precision": precision, "wall_ms": round(wall, 3), "profiled_wall_ms": round(prof_wall, 3),
            "kernel_total_us": round(sum(k["total_us"] for k in kernels), 1), "kernels": kernels, "ops": ops,
            "table": table}


def _timer(torch: Any, cuda: bool, reps: int) -> Callable[[Callable[[], Any]], float]:
    """Median ms of ``fn`` over ``reps`` calls after 3 warm-ups (CUDA events on a GPU)."""
    import statistics

    def run(fn: Callable[[], Any]) -> float:
        for _ in range(3):
            fn()
        times = []
        for _ in range(reps):
            if cuda:
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                fn()
                e.record()
                e.synchronize()
                times.append(s.elapsed_time(e))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    return run


def candidate_timings(size: Size, device: str = "cuda", reps: int = 20) -> list[dict[str, Any]]:
    """Time F's suspect operations at their real shapes against candidate rewrites (issue 15, item 2).

    Per row: op, variant, dtype, shape, median ms per call, max |difference| from the op's first
    (today's) variant. The ops: the q k^T product over H*W pixels with 2 or 4 channels per head, the
    spatial L2 normalisation, ChannelNorm (LayerNorm over channels via permuted copies), the depthwise
    3x3 and the 1x1 convolutions. Random inputs; the numbers are per call, not per forward.
    """
    torch = require("torch", "the candidate timings")

    dev = torch.device(device)
    h, w = size
    g = torch.Generator().manual_seed(0)  # one stream of random inputs, drawn in the order below
    table = _CandidateTable(torch, _timer(torch, device == "cuda", reps))
    _attention_candidates(table, torch, dev, g, h * w)
    _channel_norm_candidates(table, torch, dev, g, h, w)
    _conv_candidates(table, torch, dev, g, h, w)
    return table.rows


class _CandidateTable:
    """Rows of :func:`candidate_timings`: each variant timed and compared with the op's first variant."""

    def __init__(self, torch: Any, timed: Callable[[Callable[[], Any]], float]) -> None:
        self.torch, self.timed = torch, timed
        self.rows: list[dict[str, Any]] = []

    def add(self, op: str, shape: Any, dtype: str, variants: list[tuple[str, Callable[[], Any]]]) -> None:
        base = None
        for name, fn in variants:
            with self.torch.inference_mode():
                out = fn()
                ms = self.timed(fn)
            diff = None if base is None else float((out.float() - base.float()).abs().max())
            base = out if base is None else base
            self.rows.append({"op": op, "variant": name, "dtype": dtype, "shape": str(shape), "ms": round(ms, 4),
                              "max_abs_diff": diff})


def _attention_candidates(table: _CandidateTable, torch: Any, dev: Any, g: Any, n: int) -> None:
    """q k^T over n = H*W pixels (2 and 4 channels per head, float32 and float16) and the L2 normalisation."""
    import torch.nn.functional as F

    split = next((s for s in (64, 32, 16, 8, 4, 2, 1) if n % s == 0), 1)
    for c in (2, 4):  # channels per head: encoders and AFM (dim 16 / 8 heads), decoder (32 / 8)
        for dt in (torch.float32, torch.float16):
            q = F.normalize(torch.randn(1, 8, c, n, generator=g), dim=-1).to(dev, dt)
            k = F.normalize(torch.randn(1, 8, c, n, generator=g), dim=-1).to(dev, dt)
            kt = k.transpose(-2, -1)
            table.add("q@k^T", tuple(q.shape), str(dt).replace("torch.", ""), [
                ("matmul (today)", lambda q=q, kt=kt: q @ kt),
                ("broadcast mul + sum", lambda q=q, k=k: (q.unsqueeze(3) * k.unsqueeze(2)).sum(-1)),
                (f"split-K x{split} matmul + sum", lambda q=q, k=k, c=c: (
                    q.reshape(1, 8, c, split, n // split).transpose(2, 3)
                    @ k.reshape(1, 8, c, split, n // split).permute(0, 1, 3, 4, 2)).sum(2)),
                ("float32 matmul", lambda q=q, kt=kt: q.float() @ kt.float()),
            ])
    x = torch.randn(1, 8, 4, n, generator=g).to(dev)
    table.add("L2 normalise over H*W", tuple(x.shape), "float32", [
        ("F.normalize (today)", lambda: F.normalize(x, dim=-1)),
        ("x * rsqrt(sum x^2)", lambda: x * torch.rsqrt((x * x).sum(-1, keepdim=True).clamp_min(1e-24))),
        ("torch.linalg.vector_norm", lambda: x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-12)),
    ])


def _channel_norm_candidates(table: _CandidateTable, torch: Any, dev: Any, g: Any, h: int, w: int) -> None:
    """ChannelNorm (LayerNorm over channels) at 16 and 32 channels: permuted copies vs statistics in NCHW."""
    import torch.nn.functional as F

    for ch in (16, 32):
        x = torch.randn(1, ch, h, w, generator=g).to(dev)
        wt, bs = torch.randn(ch, generator=g).to(dev), torch.randn(ch, generator=g).to(dev)

        def permuted(x=x, wt=wt, bs=bs, ch=ch) -> Any:
            y = F.layer_norm(x.permute(0, 2, 3, 1).contiguous(), (ch,), wt, bs, 1e-5)
            return y.permute(0, 3, 1, 2).contiguous()

        def direct(x=x, wt=wt, bs=bs) -> Any:
            mu = x.mean(1, keepdim=True)
            var = (x - mu).pow(2).mean(1, keepdim=True)
            return (x - mu) * torch.rsqrt(var + 1e-5) * wt[:, None, None] + bs[:, None, None]

        table.add("ChannelNorm", tuple(x.shape), "float32", [
            ("permute + layer_norm + permute (today)", permuted),
            ("channel stats in NCHW", direct),
            ("layer_norm on channels_last memory", lambda x=x, wt=wt, bs=bs, ch=ch: F.layer_norm(
                x.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1), (ch,), wt, bs, 1e-5
            ).permute(0, 3, 1, 2)),
        ])


def _conv_candidates(table: _CandidateTable, torch: Any, dev: Any, g: Any, h: int, w: int) -> None:
    """The depthwise 3x3 (48 and 128 channels) and the 1x1 32->128 convolutions: float32 vs float16 layouts."""
    import torch.nn.functional as F

    for ch in (48, 128):  # qkv depthwise (3 x 16) and the FFN depthwise (2 x 2 x 32)
        x = torch.randn(1, ch, h, w, generator=g).to(dev)
        wt = torch.randn(ch, 1, 3, 3, generator=g).to(dev)
        xh, wh = x.half(), wt.half()
        xl = xh.contiguous(memory_format=torch.channels_last)
        table.add("depthwise 3x3", tuple(x.shape), "mixed", [
            ("float32 NCHW (today)", lambda x=x, wt=wt, ch=ch: F.conv2d(x, wt, padding=1, groups=ch)),
            ("float16 NCHW", lambda xh=xh, wh=wh, ch=ch: F.conv2d(xh, wh, padding=1, groups=ch)),
            ("float16 channels_last", lambda xl=xl, wh=wh, ch=ch: F.conv2d(xl, wh, padding=1, groups=ch)),
        ])
    x = torch.randn(1, 32, h, w, generator=g).to(dev)
    wt = torch.randn(128, 32, 1, 1, generator=g).to(dev)
    xh, wh = x.half(), wt.half()
    xl = xh.contiguous(memory_format=torch.channels_last)
    table.add("1x1 conv 32->128", tuple(x.shape), "mixed", [
        ("float32 NCHW (today)", lambda: F.conv2d(x, wt)),
        ("float16 NCHW", lambda: F.conv2d(xh, wh)),
        ("float16 channels_last", lambda: F.conv2d(xl, wh)),
    ])


def to_text(report: dict[str, Any]) -> str:
    """Plain-text report: per precision the kernel list, the op list and the profiler table."""
    c = report["config"]
    lines = [f"# F forward profile: {report['device']}, {c['size'][0]}x{c['size'][1]}, torch {report['torch']} "
             f"(CUDA {report['cuda']})", ""]
    for run in report["runs"]:
        lines += [f"## {run['precision']}: forward {run['wall_ms']} ms (profiled {run['profiled_wall_ms']} ms)", ""]
        if run["kernels"]:
            lines += [f"Top device kernels (sum of listed: {run['kernel_total_us'] / 1e3:.2f} ms)", "",
                      "| kernel | calls | ms | share |", "|---|---|---|---|"]
            lines += [f"| {k['name'][:110]} | {k['calls']} | {k['total_us'] / 1e3:.3f} | {100 * k['share']:.1f}% |"
                      for k in run["kernels"]]
            lines.append("")
        lines += ["Top aten ops by self time, grouped by input shape", "", "| op | input shapes | calls | self ms |",
                  "|---|---|---|---|"]
        lines += [f"| {o['name']} | {o['shapes'][:90]} | {o['calls']} | {o['self_us'] / 1e3:.3f} |" for o in run["ops"]]
        lines += ["", "```", run["table"].rstrip(), "```", ""]
    if report.get("candidates"):
        lines += ["## Candidate rewrites of the suspect ops (median ms per call; diff vs the op's first row)", "",
                  "| op | variant | dtype | shape | ms | max abs diff |", "|---|---|---|---|---|---|"]
        for r in report["candidates"]:
            diff = "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.2e}"
            lines.append(f"| {r['op']} | {r['variant']} | {r['dtype']} | {r['shape']} | {r['ms']:.4f} | {diff} |")
        lines.append("")
    return "\n".join(lines)


def write_report(report: dict[str, Any], path: Path) -> tuple[Path, Path]:
    """``path`` (.txt) and the same stem .json."""
    path = Path(path)
    atomic_write_text(path, to_text(report))
    js = path.with_suffix(".json")
    atomic_write_text(js, json.dumps({**report, "runs": [{k: v for k, v in r.items() if k != "table"}
                                                         for r in report["runs"]]}, indent=1) + "\n")
    return path, js
