"""ONNX Runtime CPU session settings for ReFusion's graphs (no torch; onnxruntime imported lazily).

Why each setting (measured with ``rfbench latency --profile`` on a 2-core EPYC, see
benchmarks/README.md):

- ``graph_optimization_level = ORT_ENABLE_ALL``: includes the NCHWc layout transform, which
  runs the 3x3 depthwise convolutions (the largest share of the time) with MLAS'
  blocked kernels; ``ORT_ENABLE_EXTENDED`` leaves them on the slow grouped-GEMM path.
- ``intra_op_num_threads`` = physical cores available to this process: SMT siblings
  share the FMA units and the memory bandwidth this memory-bound model is limited by.
- ``session.intra_op.allow_spinning = 0``: worker threads sleep between the ~500
  small kernels instead of busy-waiting. On the shared 2-core test machine spinning
  cost ~1.7x; on a dedicated machine it may gain a little (``spinning=True``), but next
  to rfrun's capture threads it steals their CPU.
- ``session.set_denormal_as_zero = 1``: no slow denormal arithmetic (outputs unchanged
  within 1e-6: the activations of F are far from 1e-38).
- sequential execution, memory arena and memory pattern on: frames of a fixed size reuse
  the same buffers.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ._deps import require

#: Session config entries set by :func:`cpu_session_options` (key -> value).
CONFIG_ENTRIES = {
    "session.intra_op.allow_spinning": "0",
    "session.set_denormal_as_zero": "1",
}


def physical_cores() -> int:
    """Physical cores this process may run on (SMT siblings counted once); at least 1."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (topo / "physical_package_id").read_text().strip()
            core = (topo / "core_id").read_text().strip()
        except OSError:
            return max(1, len(cpus))
        cores.add((package, core))
    return max(1, len(cores))


def cpu_session_options(threads: int = 0, spinning: bool = False) -> Any:
    """``onnxruntime.SessionOptions`` tuned for the CPU execution provider.

    threads: intra-op threads; 0 = :func:`physical_cores`. spinning: let idle workers
    busy-wait (a little faster on a dedicated machine, worse on a shared one).
    """
    ort = require("onnxruntime", "the ONNX Runtime backend")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = int(threads) if threads and threads > 0 else physical_cores()
    so.inter_op_num_threads = 1
    so.enable_cpu_mem_arena = True
    so.enable_mem_pattern = True
    entries = dict(CONFIG_ENTRIES)
    if spinning:
        entries["session.intra_op.allow_spinning"] = "1"
    for key, value in entries.items():
        so.add_session_config_entry(key, value)
    return so


def describe_options(threads: int = 0, spinning: bool = False) -> dict[str, Any]:
    """The settings :func:`cpu_session_options` applies, as plain data for reports."""
    return {
        "graph_optimization_level": "ORT_ENABLE_ALL",
        "execution_mode": "ORT_SEQUENTIAL",
        "intra_op_num_threads": int(threads) if threads and threads > 0 else physical_cores(),
        "inter_op_num_threads": 1,
        "enable_cpu_mem_arena": True,
        "enable_mem_pattern": True,
        **CONFIG_ENTRIES,
        **({"session.intra_op.allow_spinning": "1"} if spinning else {}),
    }
