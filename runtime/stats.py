"""Per-stage timing and the run summary (frames, drops, FPS, p50/p95/p99 per stage).

Samples go into fixed-size ring buffers, so a camera running for hours keeps flat
memory; percentiles cover the most recent :data:`WINDOW` frames.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .fsutil import atomic_write_text

#: Stages timed per frame, in pipeline order. ``latency`` is capture -> written.
STAGES = ("capture", "align", "infer", "sink", "latency")
#: Samples kept per stage for the percentiles.
WINDOW = 65536


class StageTimes:
    """Ring buffers of per-frame durations in seconds, one per stage."""

    def __init__(self, stages: tuple[str, ...] = STAGES, window: int = WINDOW) -> None:
        self.window = window
        self._buf = {s: np.zeros(window, np.float64) for s in stages}
        self._n = {s: 0 for s in stages}

    def add(self, stage: str, seconds: float) -> None:
        n = self._n[stage]
        self._buf[stage][n % self.window] = seconds
        self._n[stage] = n + 1

    def samples(self, stage: str) -> np.ndarray:
        n = min(self._n[stage], self.window)
        return self._buf[stage][:n]

    def last(self, stage: str) -> float:
        n = self._n[stage]
        return float(self._buf[stage][(n - 1) % self.window]) if n else 0.0

    def summary_ms(self) -> dict[str, dict[str, float]]:
        """stage -> {mean, p50, p95, p99, max} in milliseconds (stages with samples only)."""
        out: dict[str, dict[str, float]] = {}
        for stage in self._buf:
            x = self.samples(stage)
            if x.size == 0:
                continue
            p50, p95, p99 = np.percentile(x, [50, 95, 99]) * 1e3
            out[stage] = {
                "mean": round(float(x.mean()) * 1e3, 3),
                "p50": round(float(p50), 3),
                "p95": round(float(p95), 3),
                "p99": round(float(p99), 3),
                "max": round(float(x.max()) * 1e3, 3),
            }
        return out


@dataclass(frozen=True)
class RunSummary:
    """What a run did. Times in milliseconds, fps in frames per second."""

    frames: int  # fused frames written to the sinks
    dropped: int  # frames captured but never fused (live sources keep only the newest)
    dropped_per_source: dict[str, int]
    skipped: int  # pairs skipped: a frame failed to decode, or live frames too far apart in time
    elapsed_s: float
    fps: float
    stages_ms: dict[str, dict[str, float]]
    backend: str
    model: str
    size: list[int] | None  # [H, W] fused
    normalisation: str
    sources: dict[str, str]  # role -> source description (credentials masked)
    outputs: list[str]
    stopped_by: str  # "end", "interrupt", "window", "max-frames"
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def format(self) -> str:
        """A few human lines for the console."""
        lines = [
            f"frames {self.frames}, dropped {self.dropped}, skipped {self.skipped}, "
            f"{self.elapsed_s:.2f} s, {self.fps:.2f} FPS ({self.backend})",
        ]
        if self.stages_ms:
            lines.append(f"{'stage':<9}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}")
            for stage, s in self.stages_ms.items():
                lines.append(f"{stage:<9}{s['p50']:>10.2f}{s['p95']:>10.2f}{s['p99']:>10.2f}")
        for out in self.outputs:
            lines.append(f"wrote {out}")
        return "\n".join(lines)


def write_json(path: str | os.PathLike, text: str) -> None:
    """Write text atomically (temp file + rename)."""
    atomic_write_text(path, text + "\n")


class FpsMeter:
    """Frames per second over a sliding time window (for the overlay and the progress bar).

    The window always keeps the previous tick, so frames slower than the window (a CPU
    at 1-2 s per frame) still give their rate (0.6 FPS), not 0. Only the very first
    tick has no rate: it returns 0.0 and :attr:`ready` is False.
    """

    def __init__(self, span_s: float = 1.0) -> None:
        self.span = span_s
        self._times: list[float] = []

    @property
    def ready(self) -> bool:
        """True once two ticks give a rate."""
        return len(self._times) >= 2

    def tick(self, now: float | None = None) -> float:
        now = time.perf_counter() if now is None else now
        self._times.append(now)
        while len(self._times) > 2 and now - self._times[0] > self.span:
            self._times.pop(0)
        if len(self._times) < 2:
            return 0.0
        return (len(self._times) - 1) / max(self._times[-1] - self._times[0], 1e-9)
