"""TensorRT itself, without a GPU: tensorrt_rtx parses every graph rfexport writes and builds the FP16 engine.

- Each of the four graphs (core/colour x FP32/FP16) of the authors' IVIF model is parsed
  by the real TensorRT-RTX ONNX parser, and the precision structure is asserted on the
  parsed network: every reduction over H*W takes float32, convolutions are half exactly
  in the FP16 graphs, the colour graph has uint8 frames in and out.
- The check can fail: with one float32 island turned float16 in the ONNX, the parsed
  network check names the reduction that lost it.
- The FP16 colour engine is built ahead of time at a small profile, with its side-car;
  ``rfrun`` on that plan without a GPU ends with one clear message.

Skipped with the reason when tensorrt_rtx is not installed (CI installs it: .ci/run).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

trt = pytest.importorskip("tensorrt_rtx", reason="tensorrt_rtx not installed (pip install tensorrt-rtx-cu13==1.7.1.116)")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

from refusion.export.tensorrt_build import (  # noqa: E402
    RTX_BUILD_NAMES,
    TRT_BUILD_NAMES,
    EngineConfig,
    build_engine,
    probe_gpu,
)
from refusion.export.trt_network import TRT_NETWORK_NAMES, check_network, network_report, parse_onnx  # noqa: E402
from refusion.runtime.backends.tensorrt import RTX_API_NAMES, TRT_API_NAMES  # noqa: E402
from refusion.runtime.errors import EngineError  # noqa: E402
from refusion.runtime.progress import CallbackProgress  # noqa: E402

SMALL = dict(min_size=(64, 64), opt_size=(120, 160), max_size=(240, 320))


@pytest.fixture(scope="module")
def graphs(official: Path, tmp_path_factory) -> dict[str, Path]:
    """All four graphs of the authors' IVIF model, as ``rfexport --fp16`` writes them (small check sizes)."""
    import torch

    from refusion.export.onnx_export import ExportConfig, export_model

    out = tmp_path_factory.mktemp("rtx")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = export_model(
            ExportConfig(model=official / "ReFusion_IVIF.pth", task="ivif", out_dir=out, fp16=True,
                         check_sizes=((64, 80),), fp16_check_sizes=((96, 128),))
        )
    finally:
        torch.set_num_threads(n)
    assert set(res.files) == {"core.fp32", "colour.fp32", "core.fp16", "colour.fp16"}
    return res.files


def _parsed_report(path: Path):
    _builder, network, _parser = parse_onnx(trt, path)
    return network_report(network, trt)


@pytest.mark.parametrize("key", ["core.fp32", "colour.fp32", "core.fp16", "colour.fp16"])
def test_parsed_network_keeps_the_precision_structure(graphs, key):
    graph, precision = key.split(".")
    rep = _parsed_report(graphs[key])
    print(f"{key}: {rep.describe()}; {json.dumps(rep.summary())}")  # the layer counts, in the -s / -rA output
    assert check_network(rep, graph, precision) == []
    spatial = [r for r in rep.reductions if r.spatial]
    assert len(spatial) == (18 if graph == "colour" else 16)  # 16 q/k L2 norms (+ output min and max)
    assert all(r.input_dtype == "FLOAT" for r in spatial)
    convs = sum(rep.conv_input_dtypes.values())
    assert convs >= 54 and rep.conv_input_dtypes.get("HALF", 0) == (convs if precision == "fp16" else 0)
    if graph == "colour":
        assert rep.io_types["a"] == rep.io_types["b"] == rep.io_types["fused"] == "UINT8"
        assert rep.io_types["norm_state"] == rep.io_types["norm_state_out"] == "FLOAT"
    else:
        assert rep.io_types == {"a": "FLOAT", "b": "FLOAT", "fused": "FLOAT"}


def remove_island(model, op: str, which: int = 0, as_op: str | None = None) -> str:
    """Make the ``which``-th ``op`` reduction of an FP16 graph run in float16, in place; returns its name.

    A Cast to float16 goes in front of the reduction and a Cast back to float32 after it,
    so the graph stays well typed and only that reduction loses its float32 island: what an
    FP16 conversion without the island produces. ``as_op`` also swaps the reduction's op
    (ReduceL2 -> ReduceSumSquare is ``x.pow(2).sum(-1)`` written by hand).
    """
    from onnx import TensorProto, helper

    g = model.graph
    node = [n for n in g.node if n.op_type == op][which]
    x, y = node.input[0], node.output[0]
    to_half = helper.make_node("Cast", [x], [x + "_half"], to=TensorProto.FLOAT16, name=node.name + "_to_half")
    back = helper.make_node("Cast", [y + "_half"], [y], to=TensorProto.FLOAT, name=node.name + "_to_float")
    node.input[0], node.output[0] = x + "_half", y + "_half"
    if as_op:
        node.op_type = as_op
    idx = list(g.node).index(node)
    g.node.insert(idx + 1, back)
    g.node.insert(idx, to_half)
    return node.name


def _broken(graphs, tmp_path, *args) -> tuple[Path, str]:
    from refusion.export.fp16 import lint_fp16

    model = onnx.load(str(graphs["colour.fp16"]))
    name = remove_island(model, *args)
    assert any("float32 island" in p for p in lint_fp16(model, "colour"))  # the ONNX lint sees it too
    path = tmp_path / "broken.colour.fp16.onnx"
    onnx.save(model, str(path))
    return path, name


def test_removed_minmax_island_is_caught_on_the_parsed_network(graphs, tmp_path):
    broken, name = _broken(graphs, tmp_path, "ReduceMin")
    rep = _parsed_report(broken)  # TensorRT accepts the graph: nothing but this check stops it
    problems = check_network(rep, "colour", "fp16")
    assert len(problems) == 1 and "HALF" in problems[0] and f"{name!r}" in problems[0], problems
    assert check_network(_parsed_report(graphs["colour.fp16"]), "colour", "fp16") == []  # the intact graph passes
    with pytest.raises(EngineError, match="float32 island"):  # and the builder refuses it
        build_engine(EngineConfig(onnx=broken, flavour="tensorrt_rtx", **SMALL))
    assert not list(tmp_path.glob("*.plan"))


def test_removed_l2_island_is_caught_on_the_parsed_network(graphs, tmp_path):
    """The q/k sum of squares over H*W in float16 (written as ReduceSumSquare): caught."""
    broken, _name = _broken(graphs, tmp_path, "ReduceL2", 3, "ReduceSumSquare")
    problems = check_network(_parsed_report(broken), "colour", "fp16")
    assert len(problems) == 1 and "takes HALF" in problems[0] and "(SUM over axes [3]" in problems[0], problems


def test_parser_keeps_reducel2_in_float32_by_itself(graphs, tmp_path):
    """Observed with tensorrt_rtx 1.7.1: a plain ReduceL2 on a float16 input is parsed with its own cast to
    float32 (square, sum, sqrt all FLOAT), so dropping only the Cast of an L2 island leaves no half
    reduction. If a later parser stops doing that, this fails and the network check above takes over."""
    broken, _name = _broken(graphs, tmp_path, "ReduceL2", 3)
    rep = _parsed_report(broken)
    assert all(r.input_dtype == "FLOAT" for r in rep.reductions if r.spatial)
    assert check_network(rep, "colour", "fp16") == []


def test_half_convolutions_are_required_in_fp16(graphs):
    """The conv check discriminates too: the FP32 graph's report fails as an FP16 graph."""
    rep = _parsed_report(graphs["colour.fp32"])
    problems = check_network(rep, "colour", "fp16")
    assert any("convolutions are not half" in p for p in problems)


@pytest.fixture(scope="module")
def rtx_plan(graphs, tmp_path_factory):
    out = tmp_path_factory.mktemp("plan")
    messages: list[str] = []
    result = build_engine(
        EngineConfig(onnx=graphs["colour.fp16"], out=out, flavour="tensorrt_rtx", **SMALL), CallbackProgress(messages.append)
    )
    return result, messages


def test_fp16_colour_engine_builds_without_a_gpu(rtx_plan, graphs):
    from refusion.runtime.sidecar import read_sidecar, sha256_file

    result, messages = rtx_plan
    assert result.plan.is_file() and result.plan.stat().st_size > 1_000_000
    umask = os.umask(0)
    os.umask(umask)
    assert result.plan.stat().st_mode & 0o777 == 0o666 & ~umask  # readable like any new file (Triton, other users)
    side = read_sidecar(result.plan)
    assert side["flavour"] == "tensorrt_rtx" and side["tensorrt_version"] == trt.__version__
    assert side["compute_capabilities"] == "default" and side["gpu_name"] == ""
    assert side["precision"] == "fp16" and side["graph"] == "colour"
    assert side["profile"] == {"min": [64, 64], "opt": [120, 160], "max": [240, 320]}
    assert side["onnx_sha256"] == sha256_file(graphs["colour.fp16"]) and side["plan_sha256"] == sha256_file(result.plan)
    assert side["network"]["convolutions_by_input_dtype"] == {"HALF": side["network"]["by_type"]["CONVOLUTION"]}
    assert side["io_tensors"]["a"] == "UINT8" and "--trt-flavour tensorrt_rtx" in side["rebuild_command"]
    assert any("done in" in m for m in messages)  # progress from the builder's IProgressMonitor
    print(f"plan {result.plan.stat().st_size} bytes, built in {result.build_seconds:.1f} s, network {side['network']}")


def test_target_compute_capabilities(graphs, tmp_path):
    from refusion.runtime.sidecar import read_sidecar

    with pytest.raises(EngineError, match="cannot target compute capability 9.0"):
        build_engine(EngineConfig(onnx=graphs["colour.fp16"], out=tmp_path, flavour="tensorrt_rtx",
                                  compute_capabilities=((9, 0),), **SMALL))
    res = build_engine(EngineConfig(onnx=graphs["colour.fp16"], out=tmp_path, flavour="tensorrt_rtx",
                                    compute_capabilities=((8, 6), (12, 0)), **SMALL))
    assert read_sidecar(res.plan)["compute_capabilities"] == ["8.6", "12.0"]


def test_rfrun_on_the_plan_without_a_gpu_says_so(rtx_plan, tmp_path):
    if probe_gpu().count:
        pytest.skip("a GPU is present")
    from click.testing import CliRunner

    from refusion.runtime.cli import cli

    result, _ = rtx_plan
    r = CliRunner().invoke(cli, ["--demo", "--frames", "2", "-m", str(result.plan), "-o", str(tmp_path / "d.mp4")])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "tensorrt_rtx" in r.output and "needs an NVIDIA GPU" in r.output and "--backend ort" in r.output
    assert r.output.count("Error:") == 1 and not (tmp_path / "d.mp4").exists()


def _attributes(module) -> set[str]:
    names = set(dir(module))
    for obj_name in dir(module):
        obj = getattr(module, obj_name)
        if isinstance(obj, type):
            names.update(dir(obj))
            for member in getattr(obj, "__members__", {}):
                names.add(member)
    return names


def test_every_tensorrt_name_we_use_exists_in_tensorrt_rtx():
    """Builder, network walk and runtime (including the runtime cache) names are attributes of the installed module."""
    have = _attributes(trt)
    used = TRT_BUILD_NAMES + RTX_BUILD_NAMES + TRT_NETWORK_NAMES + TRT_API_NAMES + RTX_API_NAMES
    missing = sorted(n for n in set(used) if n not in have)
    # Full-TensorRT-only names the RTX build path never touches: the version-compatible switches, and
    # ignore_mismatch, a keyword argument of set_timing_cache (no attribute; timing cache is full-TensorRT only).
    full_only = {"engine_host_code_allowed", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME", "AMPERE_PLUS", "ignore_mismatch"}
    assert sorted(set(missing) - full_only) == []
    assert "FP16" not in trt.BuilderFlag.__members__ and "execute_async_v2" not in have  # the check discriminates
