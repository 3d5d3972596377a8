"""benchmarks/gpu_check.sh: syntax and usage errors; its dry run on the CPU (every stage but the pytest one,
tiny sizes; ``slow``); the kernel profile it runs, on a tiny CPU forward."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def _bash() -> str:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not found")
    return bash


def test_script_parses_and_refuses_without_a_results_folder() -> None:
    bash = _bash()
    subprocess.run([bash, "-n", str(SCRIPT)], check=True)
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    proc = subprocess.run([bash, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2 and "usage" in proc.stderr
    proc = subprocess.run([bash, str(SCRIPT), "/tmp/unused"], capture_output=True, text=True, timeout=60,
                          env={**env, "GPU_CHECK_DEVICE": "tpu"})
    assert proc.returncode == 2 and "cuda or cpu" in proc.stderr


@pytest.mark.slow
def test_dry_run_on_cpu(tmp_path: Path) -> None:
    """About a minute on the 2-core box; run before spending GPU time: pytest -m slow tests/test_gpu_check.py"""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    bash = _bash()
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    env.update(GPU_CHECK_DEVICE="cpu", PYTHON=sys.executable, GPU_CHECK_STAGES="env,latency,profile,train",
               OMP_NUM_THREADS="1")
    proc = subprocess.run([bash, str(SCRIPT), str(tmp_path)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (res,) = tmp_path.iterdir()
    assert res.name.startswith("gpu_check_cpu-dryrun")
    files = sorted(p.name for p in res.iterdir())
    assert len(files) <= 8, files  # what a lent GPU machine hands back from $OUT
    summary = (res / "summary.md").read_text()
    for name in ("env", "latency", "profile", "train"):
        assert f"| {name} | ok | 0 |" in summary, summary
    assert "| tests |" not in summary  # not selected
    lat = json.loads(next(res.glob("latency_*.json")).read_text())
    ok = {(r["backend"], r["graph"]) for r in lat["rows"] if r["status"] == "ok"}
    assert ("torch-backend-cpu", "colour") in ok and ("torch-cpu", "core") in ok
    prof = json.loads((res / "profile_forward.json").read_text())
    assert [r["precision"] for r in prof["runs"]] == ["fp32", "fp16"]
    assert any("conv" in o["name"] for o in prof["runs"][0]["ops"])
    assert next(res.glob("train_speed_cpu_*.json")).is_file()


def test_kernel_profile_on_cpu(tmp_path: Path, torch_one_thread) -> None:
    pytest.importorskip("torch")
    from refusion.benchmarks.kernel_profile import ProfileConfig, profile_forward, write_report

    model = REPO / "train" / "models" / "ivif.pt"
    report = profile_forward(ProfileConfig(model=model, size=(16, 24), device="cpu", precisions=("fp32",), warmup=1,
                                           row_limit=5))
    (run,) = report["runs"]
    assert run["precision"] == "fp32" and run["wall_ms"] > 0 and run["kernels"] == []  # no device kernels on CPU
    assert len(run["ops"]) == 5 and all(o["name"].startswith("aten::") for o in run["ops"])
    assert run["ops"][0]["self_us"] >= run["ops"][-1]["self_us"]  # sorted by self time
    txt, js = write_report(report, tmp_path / "p.txt")
    assert "## fp32: forward" in txt.read_text() and json.loads(js.read_text())["device"] == "cpu"
    cands = report["candidates"]
    assert {r["op"] for r in cands} >= {"q@k^T", "L2 normalise over H*W", "ChannelNorm", "depthwise 3x3"}
    for r in cands:
        assert r["ms"] > 0
        if r["dtype"] == "float32" and r["max_abs_diff"] is not None:  # float32 rewrites are exact up to rounding
            assert r["max_abs_diff"] < 1e-5, r
    assert "Candidate rewrites" in txt.read_text()
