"""runtime/ort_tuning.py: session options are what the docstring says; the module imports no torch."""
from __future__ import annotations

import subprocess
import sys

import pytest

ort = pytest.importorskip("onnxruntime")

from refusion.runtime import ort_tuning  # noqa: E402


def test_physical_cores_positive():
    n = ort_tuning.physical_cores()
    assert 1 <= n <= (__import__("os").cpu_count() or n)


def test_cpu_session_options():
    so = ort_tuning.cpu_session_options(3)
    assert so.intra_op_num_threads == 3
    assert so.inter_op_num_threads == 1
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert so.get_session_config_entry("session.set_denormal_as_zero") == "1"
    assert ort_tuning.cpu_session_options().intra_op_num_threads == ort_tuning.physical_cores()
    assert ort_tuning.cpu_session_options(2, spinning=True).get_session_config_entry("session.intra_op.allow_spinning") == "1"


def test_describe_matches():
    d = ort_tuning.describe_options(2)
    assert d["intra_op_num_threads"] == 2 and d["session.intra_op.allow_spinning"] == "0"


def test_no_torch_import():
    code = "import sys, refusion.runtime.ort_tuning as t; t.cpu_session_options(1); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
