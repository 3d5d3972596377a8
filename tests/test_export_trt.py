"""TensorRT build logic without a GPU (layer-precision check, paths, commands, Triton), and the real build on one."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from refusion.export.tensorrt_build import (
    EngineConfig,
    build_command,
    build_engine,
    check_precision,
    plan_path_for,
    probe_gpu,
    summarise_layer_precisions,
)
from refusion.export.triton import config_pbtxt, write_triton_repo
from refusion.runtime.card import ModelCard, onnx_metadata
from refusion.runtime.errors import EngineError, MissingDependencyError

# What the engine inspector returns with ProfilingVerbosity.DETAILED (abridged).
INSPECTOR_FP16 = {
    "Layers": [
        {"Name": "cast_in", "LayerType": "Reformat", "Outputs": [{"Name": "x", "Format/Datatype": "Row major linear FP16 format"}]},
        {"Name": "conv", "LayerType": "CaskConvolution", "Outputs": [{"Name": "y", "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}]},
        {"Name": "l2", "LayerType": "Reduce", "Outputs": [{"Name": "n", "Format/Datatype": "Row major linear FP32"}]},
        {"Name": "out", "LayerType": "Reformat", "Outputs": [{"Name": "o", "Format/Datatype": "Row major linear UInt8"}]},
    ]
}
INSPECTOR_FP32 = {"Layers": [{"Name": f"l{i}", "Outputs": [{"Format/Datatype": "Row major linear FP32"}]} for i in range(5)]}


def test_layer_precision_summary_and_check():
    counts = summarise_layer_precisions(json.dumps(INSPECTOR_FP16))
    assert counts == {"fp16": 2, "fp32": 1, "other": 1, "unknown": 0}
    check_precision(counts, "fp16", 0.5)
    bad = summarise_layer_precisions(INSPECTOR_FP32)
    with pytest.raises(EngineError, match="came out 5 FP32 vs 0 FP16"):
        check_precision(bad, "fp16", 0.5)
    check_precision(bad, "fp32", 0.5)  # an FP32 build may be FP32
    with pytest.raises(EngineError, match="no layer datatypes"):
        check_precision(summarise_layer_precisions({"Layers": ["conv", "relu"]}), "fp16", 0.5)


def test_plan_paths_and_command(tmp_path):
    onnx = tmp_path / "m.colour.fp16.onnx"
    assert plan_path_for(EngineConfig(onnx=onnx)) == tmp_path / "m.colour.fp16.plan"
    assert plan_path_for(EngineConfig(onnx=onnx, out=tmp_path / "e")) == tmp_path / "e" / "m.colour.fp16.plan"
    assert plan_path_for(EngineConfig(onnx=onnx, out=tmp_path / "x.plan")) == tmp_path / "x.plan"
    cmd = build_command(onnx.name, EngineConfig(onnx=onnx, version_compatible=True))
    assert cmd == (
        "rfexport engine m.colour.fp16.onnx --min-size 64x64 --opt-size 480x640 --max-size 1080x1920 --version-compatible"
    )
    cmd = build_command(onnx.name, EngineConfig(onnx=onnx, flavour="tensorrt_rtx", compute_capabilities=((8, 6),)))
    assert cmd.endswith("--trt-flavour tensorrt_rtx --compute-capability 8.6")


def _tiny_onnx(path: Path) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 1, "H", "W"])
    y = helper.make_tensor_value_info("fused", TensorProto.FLOAT, [1, 1, "H", "W"])
    model = helper.make_model(
        helper.make_graph([helper.make_node("Identity", ["a"], ["fused"])], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    for k, v in onnx_metadata(ModelCard(task="ivif", sources=("ir", "vis")), "core", "fp16").items():
        e = model.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(model, str(path))
    return path


def test_full_tensorrt_without_gpu_says_how_to_build(tmp_path):
    if probe_gpu().count:
        pytest.skip("a GPU is present: the real build is tested below")
    onnx = _tiny_onnx(tmp_path / "m.fp16.onnx")
    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises(MissingDependencyError, match=r"tensorrt is not installed: pip install tensorrt-cu13"):
            build_engine(EngineConfig(onnx=onnx, flavour="tensorrt"))
    else:
        with pytest.raises(EngineError, match=r"needs an NVIDIA GPU.*rfexport engine .*m\.fp16\.onnx"):
            build_engine(EngineConfig(onnx=onnx, flavour="tensorrt"))
    assert not list(tmp_path.glob("*.plan*"))


def test_flavour_selection(monkeypatch):
    from refusion.export import tensorrt_build as tb

    with pytest.raises(EngineError, match="unknown TensorRT flavour 'tensorrt_lean'"):
        tb.select_flavour("tensorrt_lean")
    monkeypatch.setattr(tb, "_installed", lambda name: False)
    with pytest.raises(MissingDependencyError, match="no TensorRT builder is installed.*tensorrt-rtx-cu13"):
        tb.select_flavour("auto")


def test_rtx_options_are_refused_with_full_tensorrt_and_vice_versa(tmp_path):
    pytest.importorskip("tensorrt_rtx")
    onnx = _tiny_onnx(tmp_path / "m.fp16.onnx")
    with pytest.raises(EngineError, match="full-TensorRT options"):
        build_engine(EngineConfig(onnx=onnx, flavour="tensorrt_rtx", version_compatible=True))


def test_engine_refuses_a_network_that_is_not_a_refusion_graph(tmp_path):
    """tensorrt_rtx parses it (no GPU needed), and the parsed-network check refuses it before any build."""
    pytest.importorskip("tensorrt_rtx")
    onnx = _tiny_onnx(tmp_path / "m.fp16.onnx")
    with pytest.raises(EngineError, match="as parsed by tensorrt_rtx .*no convolution"):
        build_engine(EngineConfig(onnx=onnx, flavour="tensorrt_rtx"))
    assert not list(tmp_path.glob("*.plan*"))


def test_engine_into_an_unwritable_folder(tmp_path):
    import os

    if os.geteuid() == 0:
        target = Path("/proc/refusion-no-such-dir")  # even root cannot create folders in /proc
    else:
        target = tmp_path / "ro"
        target.mkdir()
        target.chmod(0o500)
    onnx = _tiny_onnx(tmp_path / "m.fp16.onnx")
    with pytest.raises(EngineError, match="cannot write into"):
        build_engine(EngineConfig(onnx=onnx, out=target))


def test_engine_rejects_bad_sizes_and_non_refusion_onnx(tmp_path):
    onnx = _tiny_onnx(tmp_path / "m.fp16.onnx")
    with pytest.raises(EngineError, match="min <= opt <= max"):
        build_engine(EngineConfig(onnx=onnx, min_size=(512, 512), opt_size=(480, 640)))
    import onnx as onnx_mod

    m = onnx_mod.load(str(onnx))
    del m.metadata_props[:]
    onnx_mod.save(m, str(tmp_path / "plain.onnx"))
    from refusion.runtime.errors import CheckpointError

    with pytest.raises(CheckpointError, match="no refusion model card"):
        build_engine(EngineConfig(onnx=tmp_path / "plain.onnx"))


def test_triton_repository(tmp_path):
    onnx = _tiny_onnx(tmp_path / "m.colour.fp16.onnx")
    card = ModelCard(task="ivif", sources=("ir", "vis")).to_json()
    folder = write_triton_repo(tmp_path / "repo", onnx, "colour", card)
    assert folder.name == "m_colour_fp16_onnx"
    text = (folder / "config.pbtxt").read_text()
    assert f'name: "{folder.name}"' in text and 'platform: "onnxruntime_onnx"' in text
    assert "dims: [ -1, -1, 3 ]" in text and "TYPE_UINT8" in text and "norm_state_out" in text
    assert (folder / "1" / "model.onnx").is_file()
    with pytest.raises(EngineError, match="--overwrite"):
        write_triton_repo(tmp_path / "repo", onnx, "colour", card)
    plan_cfg = config_pbtxt("x", "tensorrt_plan", "core")
    assert "dims: [ 1, 1, -1, -1 ]" not in plan_cfg  # only with plan_batch_one
    assert "dims: [ 1, 1, -1, -1 ]" in config_pbtxt("x", "tensorrt_plan", "core", plan_batch_one=True)
    assert "KIND_GPU" in plan_cfg


@pytest.mark.gpu
@pytest.mark.trt
def test_build_fp16_engine_on_gpu(tmp_path, official):
    """On a GPU with TensorRT: export, build the FP16 colour engine, check side-car, layer precisions, parity."""
    pytest.importorskip("tensorrt")
    from refusion.export.onnx_export import ExportConfig, export_model, ort_session, run_colour
    from refusion.runtime.sidecar import check_sidecar, read_sidecar

    res = export_model(
        ExportConfig(model=official / "ReFusion_IVIF.pth", task="ivif", out_dir=tmp_path, fp16=True,
                     check_sizes=((64, 80),), fp16_check_sizes=((96, 128),), graphs=("colour",))
    )
    onnx = res.files["colour.fp16"]
    result = build_engine(EngineConfig(onnx=onnx, min_size=(64, 64), opt_size=(240, 320), max_size=(480, 640)))
    side = read_sidecar(result.plan)
    assert side["precision"] == "fp16" and side["layer_precisions"]["fp16"] > 0
    gpu = probe_gpu()
    check_sidecar(side, side["tensorrt_version"], gpu.name, gpu.compute_capability)
    from refusion.runtime.backends.tensorrt import TensorRTBackend, load_engine
    from refusion.runtime.size import Size

    loaded = load_engine(result.plan)  # the loader alone: side-car, GPU, I/O and profile, no runner
    assert loaded.size_limits == (Size(64, 64), Size(480, 640)) and loaded.precision == "fp16"
    a = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    b = np.random.default_rng(1).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    with TensorRTBackend(result.plan, loaded=loaded) as be:
        fused, _ = be.infer(a, b, np.zeros(3, np.float32))
    ref, _ = run_colour(ort_session(res.files["colour.fp32"]), a, b)
    assert np.abs(fused.astype(int) - ref.astype(int)).max() <= 2


def test_rfexport_builds_here_when_tensorrt_rtx_is_installed():
    from refusion.export.workflow import why_no_engine_here

    has_rtx = importlib.util.find_spec("tensorrt_rtx") is not None
    assert (why_no_engine_here("auto") == "") == (has_rtx or (importlib.util.find_spec("tensorrt") is not None and probe_gpu().count > 0))
    if importlib.util.find_spec("tensorrt") is None:
        assert "tensorrt is not installed" in why_no_engine_here("tensorrt")
