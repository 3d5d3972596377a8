"""Training-speed benchmark: seconds per meta step (inner + outer update of Algorithm 1)
and per fusion & reconstruction step, and peak memory, on random data.

Each measurement warms up, synchronises the device before reading the clock, and
reports the median of the timed repetitions. Result files are named after the
device and torch build they ran on.
"""
from __future__ import annotations

import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from refusion.runtime._deps import require
from refusion.runtime.errors import RefusionError


@dataclass(frozen=True)
class SpeedConfig:
    batch: int = 4  # images per batch (2 pairs + the same pairs swapped)
    size: int = 128  # square crop side
    warmup: int = 1
    repeats: int = 3
    devices: tuple[str, ...] = ("cpu", "cuda")  # cuda is skipped (with a note) when absent
    threads: int = 0  # CPU threads (0: torch's default)
    seed: int = 0


@dataclass
class SpeedResult:
    device: str
    device_name: str
    meta_step_s: float
    fusion_step_s: float
    meta_step_all_s: list[float] = field(default_factory=list)
    fusion_step_all_s: list[float] = field(default_factory=list)
    peak_memory_mib: float | None = None  # CUDA: torch.cuda.max_memory_allocated; CPU: process max RSS
    note: str = ""


def _peak_rss_mib() -> float | None:
    try:
        import resource
    except ImportError:
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 if platform.system() != "Darwin" else rss / 2**20


def measure(device: str, config: SpeedConfig = SpeedConfig()) -> SpeedResult:
    torch = require("torch", "the training benchmark")
    from refusion.train.config import TrainConfig
    from refusion.train.meta import MetaLearner
    from refusion.train.trainer import build_networks

    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RefusionError("CUDA requested but torch sees no GPU")
    if config.threads and dev.type == "cpu":
        torch.set_num_threads(config.threads)
    f, p, r = (m.to(dev) for m in build_networks(TrainConfig(data="-", seed=config.seed)))
    learner = MetaLearner(f, p, r, lr=1e-4, p_lr=1e-4)
    g = torch.Generator().manual_seed(config.seed)
    x = torch.rand(config.batch, 2, config.size, config.size, generator=g).to(dev)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def timed(fn) -> list[float]:
        for _ in range(config.warmup):
            fn()
        sync()
        out = []
        for _ in range(config.repeats):
            t0 = time.perf_counter()
            fn()
            sync()
            out.append(time.perf_counter() - t0)
        return out

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    meta = timed(lambda: learner.meta_step(x, x, x, x))
    fus = timed(lambda: learner.fusion_step(x, x))
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) / 2**20
        name = torch.cuda.get_device_name(dev)
    else:
        peak = _peak_rss_mib()
        name = f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"
    return SpeedResult(dev.type, name, statistics.median(meta), statistics.median(fus), meta, fus, peak)


def run_benchmark(config: SpeedConfig = SpeedConfig(), progress=None) -> dict:
    torch = require("torch", "the training benchmark")
    results, notes = [], []
    for device in config.devices:
        if device.startswith("cuda") and not torch.cuda.is_available():
            notes.append("cuda: skipped, torch sees no GPU")
            continue
        if progress:
            progress(f"measuring on {device} ...")
        results.append(asdict(measure(device, config)))
    return {
        "benchmark": "train_speed",
        "config": asdict(config),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "results": results,
        "notes": notes,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def to_markdown(report: dict) -> str:
    c = report["config"]
    lines = [
        f"# Training speed (batch {c['batch']} x {c['size']}x{c['size']}, median of {c['repeats']})",
        "",
        f"torch {report['torch']}, {report['time']}",
        "",
        "| device | name | meta step (s) | fusion+recon step (s) | peak memory (MiB) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in report["results"]:
        peak = f"{r['peak_memory_mib']:.0f}" if r["peak_memory_mib"] is not None else "-"
        lines.append(f"| {r['device']} | {r['device_name']} | {r['meta_step_s']:.3f} | {r['fusion_step_s']:.3f} | {peak} |")
    lines += [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def result_stem(report: dict) -> str:
    names = "_".join(r["device"] for r in report["results"]) or "none"
    torch_v = report["torch"].replace("+", "-")
    return f"train_speed_{names}_torch{torch_v}"


def write_report(report: dict, out_dir: str | Path) -> tuple[Path, Path]:
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    stem = result_stem(report)
    jp, mp = d / f"{stem}.json", d / f"{stem}.md"
    jp.write_text(json.dumps(report, indent=2) + "\n")
    mp.write_text(to_markdown(report))
    return jp, mp
