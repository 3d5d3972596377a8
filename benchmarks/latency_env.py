"""The machine a latency result ran on (CPU, GPU, versions, load) and the peak memory of one row.

Used by :mod:`.latency` and :mod:`.infer_size`, whose results are named and described by these facts.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # not installed: recorded as absent
        return None


def versions() -> dict[str, str | None]:
    out = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": _version("torch"),
        "onnx": _version("onnx"),
        "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu"),
        "opencv": _version("opencv-python-headless") or _version("opencv-python"),
        "tensorrt": _version("tensorrt") or _version("tensorrt-cu13") or _version("tensorrt-cu12"),
        "refusion": _version("refusion"),
        "cuda": None,
    }
    try:
        import torch

        out["cuda"] = torch.version.cuda
    except ImportError:
        pass
    return out


def gpu_name() -> str | None:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return None


def host_info() -> dict[str, Any]:
    from refusion.runtime.ort_tuning import physical_cores

    return {
        "cpu_model": cpu_model(),
        "physical_cores": physical_cores(),
        "logical_cpus": os.cpu_count(),
        "gpu": gpu_name(),
        "os": platform.platform(),
        "loadavg_start": list(os.getloadavg()),
        "loadavg_end": None,
    }


# ----------------------------------------------------------------------------- memory


def _reset_rss_peak() -> bool:
    """Reset the process' VmHWM (Linux >= 4.0); False when not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_peak_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    return None


def measure_memory_start(device: str) -> Any:
    """Memory in use before a row's backend is prepared (MiB), after resetting the peak counters."""
    if device == "cuda":
        try:
            import torch

            if not torch.cuda.is_available():
                return None
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            free, total = torch.cuda.mem_get_info()
            return {"used": (total - free) / 2**20, "allocated": torch.cuda.memory_allocated() / 2**20}
        except Exception:  # no torch / no CUDA: memory is then not reported
            return None
    import gc

    gc.collect()  # sessions of earlier rows are released before the baseline is read
    reset = _reset_rss_peak()
    return {"reset": reset, "rss": _rss_peak_mb() if reset else None}


def measure_memory_end(device: str, start: Any) -> tuple[float | None, float | None, str]:
    """(peak MiB, growth over the start MiB, what was measured)."""
    if not start:
        return None, None, ""
    if device == "cuda":
        try:
            import torch

            free, total = torch.cuda.mem_get_info()
            used = (total - free) / 2**20
            peak_torch = torch.cuda.max_memory_allocated() / 2**20
            growth = max(peak_torch - start["allocated"], used - start["used"])
            return round(max(peak_torch, used), 1), round(growth, 1), "cuda: device memory in use (all processes) / torch peak allocated"
        except Exception:  # no torch / no CUDA
            return None, None, ""
    peak = _rss_peak_mb()
    if not start["reset"]:
        return peak, None, "process peak RSS since start (VmHWM could not be reset)"
    growth = round(peak - start["rss"], 1) if peak is not None and start["rss"] is not None else None
    return peak, growth, "process peak RSS (VmHWM reset before the row); growth = peak - RSS before the row"
