"""Training-speed benchmark: seconds per meta step (inner + outer update of Algorithm 1)
and per fusion & reconstruction step, and peak memory, on random data.

Each measurement warms up, synchronises the device before reading the clock, and
reports the median of the timed repetitions. Result files are named after the
device and torch build they ran on.
"""
from __future__ import annotations

import platform
import statistics
import time
from dataclasses import asdict, dataclass, field

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
    routes: tuple[str, ...] = ("jvp", "double_backward")  # meta-gradient routes timed side by side


@dataclass
class StepTiming:
    step: str  # "fusion" or "meta:<route>"
    median_s: float  # wall clock, device synchronised
    all_s: list[float]
    cpu_s: float | None  # median process CPU time (CPU runs: less sensitive to other load than wall time)
    peak_memory_mib: float | None  # CUDA: max_memory_allocated during the step; CPU: max RSS of a fresh process


@dataclass
class SpeedResult:
    device: str
    device_name: str
    steps: list[StepTiming] = field(default_factory=list)
    note: str = ""

    def ratio(self, step: str) -> float:
        """Seconds of ``step`` per fusion & reconstruction step (same device, same run)."""
        by = {s.step: s.median_s for s in self.steps}
        return by[step] / by["fusion"]


def _peak_rss_mib() -> float | None:
    try:
        import resource
    except ImportError:
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 if platform.system() != "Darwin" else rss / 2**20


def _step_functions(device: str, steps: list[str], config: SpeedConfig):
    """One learner per step kind, all from the same initial weights and data."""
    torch = require("torch", "the training benchmark")
    from refusion.train.config import TrainConfig
    from refusion.train.meta import MetaConfig, MetaLearner
    from refusion.train.trainer import build_networks

    dev = torch.device(device)
    if config.threads and dev.type == "cpu":
        torch.set_num_threads(config.threads)
    g = torch.Generator().manual_seed(config.seed)
    x = torch.rand(config.batch, 2, config.size, config.size, generator=g).to(dev)
    y = torch.rand(config.batch, 2, config.size, config.size, generator=g).to(dev)
    fns = {}
    for step in steps:
        nets = [m.to(dev) for m in build_networks(TrainConfig(data="-", seed=config.seed))]
        route = step.split(":", 1)[1] if step.startswith("meta:") else "jvp"
        learner = MetaLearner(*nets, MetaConfig(lr=1e-4, meta_grad=route))
        fns[step] = (lambda lr=learner: lr.meta_step(x, x, y, y)) if step.startswith("meta:") else \
            (lambda lr=learner: lr.fusion_step(x, x))
    return dev, fns


def _time_steps(device: str, steps: list[str], config: SpeedConfig) -> dict:
    """Time the step kinds round-robin in one process, so a change of machine load hits all alike."""
    torch = require("torch", "the training benchmark")
    dev, fns = _step_functions(device, steps, config)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    for _ in range(config.warmup):
        for fn in fns.values():
            fn()
    sync()
    wall: dict[str, list[float]] = {s: [] for s in steps}
    cpu: dict[str, list[float]] = {s: [] for s in steps}
    peak: dict[str, float] = {}
    for _ in range(config.repeats):
        for step, fn in fns.items():
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            sync()
            wall[step].append(time.perf_counter() - t0)
            cpu[step].append(time.process_time() - c0)
            if dev.type == "cuda":
                peak[step] = max(peak.get(step, 0.0), torch.cuda.max_memory_allocated(dev) / 2**20)
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
    else:
        name = f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"
    return {"name": name, "wall": wall, "cpu": cpu, "peak": peak}


def _peak_of_one_step(device: str, step: str, config: SpeedConfig) -> float | None:
    """Max RSS of a fresh process that runs one step (CPU peak memory of that step kind)."""
    _, fns = _step_functions(device, [step], config)
    fns[step]()
    return _peak_rss_mib()


def measure(device: str, config: SpeedConfig = SpeedConfig(), progress=None) -> SpeedResult:
    """Fusion step and one meta step per route on ``device``, in a fresh process."""
    import multiprocessing as mp

    torch = require("torch", "the training benchmark")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RefusionError("CUDA requested but torch sees no GPU")
    steps = ["fusion", *(f"meta:{r}" for r in config.routes)]
    ctx = mp.get_context("spawn")
    if progress:
        progress(f"{device}: timing {', '.join(steps)} round-robin ({config.repeats} rounds) ...")
    with ctx.Pool(1) as pool:
        timed = pool.apply(_time_steps, (device, steps, config))
    peaks = timed["peak"]
    if not device.startswith("cuda"):
        for step in steps:
            if progress:
                progress(f"{device}: peak memory of one {step} step ...")
            with ctx.Pool(1) as pool:
                peaks[step] = pool.apply(_peak_of_one_step, (device, step, config))
    res = SpeedResult(torch.device(device).type, timed["name"])
    res.steps = [StepTiming(s, statistics.median(timed["wall"][s]), timed["wall"][s],
                            statistics.median(timed["cpu"][s]), peaks.get(s)) for s in steps]
    return res


def run_benchmark(config: SpeedConfig = SpeedConfig(), progress=None) -> dict:
    torch = require("torch", "the training benchmark")
    results, notes = [], []
    for device in config.devices:
        if device.startswith("cuda") and not torch.cuda.is_available():
            notes.append("cuda: skipped, torch sees no GPU")
            continue
        r = measure(device, config, progress)
        results.append({**asdict(r), "ratios": {s.step: r.ratio(s.step) for s in r.steps}})
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
        f"torch {report['torch']}, {report['time']}. The step kinds are timed round-robin in one process (a change",
        "of load hits all alike); CPU peak memory is that of a fresh process running one step of the kind.",
        "A meta step is one outer step of Algorithm 1 (inner look-ahead of F and R, outer L_r, P's gradient);",
        "its cost is also given in fusion & reconstruction steps measured in the same run.",
        "",
        "| device | name | step | seconds | in fusion steps | CPU seconds | peak memory (MiB) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["results"]:
        for s in r["steps"]:
            peak = f"{s['peak_memory_mib']:.0f}" if s["peak_memory_mib"] is not None else "-"
            cpu_s = f"{s['cpu_s']:.3f}" if s["cpu_s"] is not None else "-"
            lines.append(f"| {r['device']} | {r['device_name']} | {s['step']} | {s['median_s']:.3f} | "
                         f"{r['ratios'][s['step']]:.2f} | {cpu_s} | {peak} |")
        by = {s["step"]: s["median_s"] for s in r["steps"]}
        if "meta:jvp" in by and "meta:double_backward" in by:
            lines.append(f"\n{r['device']}: the jvp meta step is {by['meta:double_backward'] / by['meta:jvp']:.2f}x "
                         "faster than the double-backward one (same run).\n")
    lines += [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def result_stem(report: dict) -> str:
    names = "_".join(r["device"] for r in report["results"]) or "none"
    torch_v = report["torch"].replace("+", "-")
    return f"train_speed_{names}_crop{report['config']['size']}_torch{torch_v}"
