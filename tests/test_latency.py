"""rfbench latency in CI size: the report's structure (keys, table header, ratios, skipped reasons), never timings."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from refusion.benchmarks import latency as L  # noqa: E402
from refusion.runtime.progress import CallbackProgress  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from refusion.train.checkpoint import save_checkpoint
    from refusion.train.networks import FusionConfig, FusionNet

    torch.manual_seed(0)
    net = FusionNet()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    return save_checkpoint(path, {"fusion": net.state_dict(), "task": "ivif", "model_config": FusionConfig().to_dict()})


@pytest.fixture(scope="module")
def sequence(tmp_path_factory) -> Path:
    import cv2

    root = tmp_path_factory.mktemp("seq")
    rng = np.random.default_rng(0)
    for sub in ("ir", "vis"):
        (root / sub).mkdir()
        for i in range(2):
            cv2.imwrite(str(root / sub / f"{i:03d}.png"), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    return root


@pytest.fixture(scope="module")
def report(checkpoint, sequence, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("results")
    config = L.LatencyConfig(
        model=checkpoint,
        backends=("torch-cpu", "ort-cpu-default", "ort-cpu", "ort-cuda", "tensorrt-fp16"),
        sizes=((64, 64),),
        graphs=("core", "colour"),
        warmup=1,
        iters=2,
        min_iters=1,
        out_dir=out,
        pipeline=True,
        pipeline_source=sequence,
        pipeline_frames=2,
        profile=True,
        profile_size=(48, 64),
    )
    messages: list[str] = []
    rep = L.run_latency(config, CallbackProgress(messages.append))
    rep["_out"] = out
    rep["_messages"] = messages
    return rep


def test_json_keys_and_rows(report):
    for key in L.JSON_KEYS:
        assert key in report, key
    for key in ("cpu_model", "physical_cores", "loadavg_start", "loadavg_end"):
        assert key in report["host"]
    assert len(report["host"]["loadavg_start"]) == 3
    for row in report["rows"]:
        assert set(L.ROW_KEYS) <= set(row)
    # 5 backends x 2 graphs x 1 size, every combination accounted for
    assert len(report["rows"]) == 10
    assert {(r["backend"], r["graph"]) for r in report["rows"]} == {
        (b, g) for b in ("torch-cpu", "ort-cpu-default", "ort-cpu", "ort-cuda", "tensorrt-fp16") for g in ("core", "colour")
    }


def test_ok_rows_have_stats_errors_and_ratios(report):
    ok = [r for r in report["rows"] if r["status"] == "ok"]
    assert {r["backend"] for r in ok} >= {"torch-cpu", "ort-cpu-default", "ort-cpu"}
    for r in ok:
        for k in ("p50_ms", "p90_ms", "p99_ms", "fps", "max_err", "speedup_vs_torch", "speedup_vs_ort_default"):
            assert r[k] is not None, (r["backend"], k)
        assert r["iters"] >= 1 and r["err_unit"] in ("abs", "levels")
        if r["backend"] == "torch-cpu":
            assert r["speedup_vs_torch"] == 1.0 and r["max_err"] == 0.0
        if r["backend"].startswith("ort-cpu"):  # ORT FP32 reproduces torch FP32
            assert r["max_err"] <= (1e-4 if r["graph"] == "core" else 2)
    assert report["baselines"] == {"torch": "torch-cpu", "ort_default": "ort-cpu-default"}


def test_skipped_backends_have_reasons(report):
    skipped = [r for r in report["rows"] if r["status"] == "skipped"]
    for r in skipped:
        assert r["reason"]
    assert any(s["backend"] == "tensorrt-fp16" and s["graph"] == "core" for s in report["skipped"])
    for s in report["skipped"]:
        assert s["reason"]


def test_files_written_and_markdown(report):
    out: Path = report["_out"]
    stem = L.result_stem(report)
    assert stem.startswith("latency_")
    js, md = out / f"{stem}.json", out / f"{stem}.md"
    data = json.loads(js.read_text())
    assert set(L.JSON_KEYS) <= set(data)
    text = md.read_text()
    assert L.MD_HEADER in text
    assert "## Skipped" in text and "tensorrt-fp16" in text
    assert "Pipeline" in text and "ORT CPU profile" in text


def test_pipeline_and_profile_sections(report):
    pipe = report["pipeline"]
    assert pipe["frames"] == 2
    assert {"capture", "align", "infer", "sink", "latency"} <= set(pipe["stages_ms"])
    prof = report["profile"]
    assert prof["ort-cpu"]["ops"] and prof["ort-cpu-default"]["ops"]
    assert {"op", "ms_per_run", "share", "nodes"} <= set(prof["ort-cpu"]["ops"][0])
    assert len(prof["ablation"]) >= 4


def test_cli_help_and_bad_input(checkpoint):
    from click.testing import CliRunner

    from refusion.benchmarks.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["latency", "--help"])
    assert res.exit_code == 0 and "--pipeline" in res.output
    res = runner.invoke(main, ["latency", "--model", str(checkpoint), "--size", "banana"])
    assert res.exit_code != 0 and "height x width" in res.output
    assert "Traceback" not in res.output


def test_a_file_that_is_no_model_is_one_error_and_writes_nothing(tmp_path):
    """Not a table of skipped rows with exit status 0: the model loads before any row is timed."""
    from click.testing import CliRunner

    from refusion.benchmarks.cli import main

    (tmp_path / "bad.pt").write_bytes(b"garbage")
    res = CliRunner().invoke(main, ["latency", "--model", str(tmp_path / "bad.pt"), "--out", str(tmp_path / "res")])
    assert res.exit_code == 1 and "not a PyTorch checkpoint" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "res").exists()


def test_unknown_backend_is_a_clear_error(checkpoint):
    from refusion.runtime.errors import EngineError

    with pytest.raises(EngineError, match="unknown backend"):
        L.run_latency(L.LatencyConfig(model=checkpoint, backends=("nope",)))


def test_torch_backend_rows(checkpoint, tmp_path):
    """rfrun's torch backend: rows on both graphs, errors against torch eager FP32, ratios in the same run."""
    config = L.LatencyConfig(
        model=checkpoint,
        backends=("torch-cpu", "torch-backend-cpu", "torch-backend-cuda"),
        sizes=((32, 40),),
        warmup=1,
        iters=2,
        min_iters=1,
        out_dir=tmp_path,
        tag="torch-backend",
    )
    rep = L.run_latency(config)
    rows = {(r["backend"], r["graph"]): r for r in rep["rows"]}
    assert len(rows) == 6
    for graph, limit in (("core", 1e-5), ("colour", 1)):
        row = rows[("torch-backend-cpu", graph)]
        assert row["status"] == "ok", row["reason"]
        assert row["precision"] == "fp32" and row["max_err"] <= limit
        assert row["speedup_vs_torch"] is not None and "torch (cpu, fp32" in row["notes"]
    if not torch.cuda.is_available():
        for graph in ("core", "colour"):
            assert rows[("torch-backend-cuda", graph)]["status"] == "skipped"
            assert "CUDA" in rows[("torch-backend-cuda", graph)]["reason"]
    md = next(tmp_path.glob("*_torch-backend.md")).read_text()
    assert "| torch-backend-cpu | colour | fp32 | 32x40 |" in md
