"""A stand-in colour ONNX graph for the runtime tests, and checks of the runtime's model loading.

The stand-in follows the colour-graph contract (inputs ``a``, ``b`` uint8 (H, W, 3) BGR
and ``norm_state`` float32 (3,); outputs ``fused`` uint8 (H, W, 3) and
``norm_state_out`` float32 (3,)), with F replaced by a cheap per-pixel function, so
runtime tests run in milliseconds without torch. Other runtime test files import
:func:`build_standin_colour_onnx` and :func:`standin_reference` from here.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

STANDIN_CARD = {
    "task": "ivif",
    "sources": ["ir", "vis"],
    "model_config": {},
    "normalisation": "minmax",
    "colour": "ycrcb-eq15",
    "provenance": {"kind": "test-standin"},
}


def build_standin_colour_onnx(path: Path, graph_kind: str = "colour", card: dict | None = None) -> Path:
    """Write a colour graph whose "network" is y_raw = 0.6 * max(Y_a, Y_b) + 0.2."""
    nodes = []
    inits = []

    def const(name: str, value) -> str:
        arr = np.asarray(value, dtype=np.float32)
        inits.append(helper.make_tensor(name, TensorProto.FLOAT, arr.shape, arr.ravel().tolist()))
        return name

    def node(op: str, inputs: list[str], out: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    c255, chalf, cone, czero = const("c255", 255.0), const("chalf", 0.5), const("cone", 1.0), const("czero", 0.0)
    ceps = const("ceps", 1e-6)
    inits.append(helper.make_tensor("split3", TensorProto.INT64, [3], [1, 1, 1]))

    def ycrcb(src: str) -> tuple[str, str, str]:
        f = node("Cast", [src], f"{src}_f", to=TensorProto.FLOAT)
        f = node("Div", [f, c255], f"{src}_n")
        nodes.append(helper.make_node("Split", [f, "split3"], [f"{src}_B", f"{src}_G", f"{src}_R"], axis=2))
        b, g, r = f"{src}_B", f"{src}_G", f"{src}_R"
        yr = node("Mul", [r, const(f"{src}_kr", 0.299)], f"{src}_yr")
        yg = node("Mul", [g, const(f"{src}_kg", 0.587)], f"{src}_yg")
        yb = node("Mul", [b, const(f"{src}_kb", 0.114)], f"{src}_yb")
        y = node("Add", [node("Add", [yr, yg], f"{src}_yrg"), yb], f"{src}_Y")
        cr = node("Add", [node("Mul", [node("Sub", [r, y], f"{src}_rmy"), const(f"{src}_kcr", 0.713)], f"{src}_crs"), chalf], f"{src}_Cr")
        cb = node("Add", [node("Mul", [node("Sub", [b, y], f"{src}_bmy"), const(f"{src}_kcb", 0.564)], f"{src}_cbs"), chalf], f"{src}_Cb")
        return y, cr, cb

    ya, cra, cba = ycrcb("a")
    yb, crb, cbb = ycrcb("b")
    mx = node("Max", [ya, yb], "ymax")
    raw = node("Add", [node("Mul", [mx, const("k06", 0.6)], "ymax6"), const("k02", 0.2)], "y_raw")

    inits.append(helper.make_tensor("i0", TensorProto.INT64, [1], [0]))
    inits.append(helper.make_tensor("i1", TensorProto.INT64, [1], [1]))
    inits.append(helper.make_tensor("i2", TensorProto.INT64, [1], [2]))
    lo = node("Gather", ["norm_state", "i0"], "lo", axis=0)
    hi = node("Gather", ["norm_state", "i1"], "hi", axis=0)
    al = node("Gather", ["norm_state", "i2"], "alpha", axis=0)
    mn = node("Reshape", [node("ReduceMin", [raw], "mn0", keepdims=0), "i1"], "mn")
    mxv = node("Reshape", [node("ReduceMax", [raw], "mx0", keepdims=0), "i1"], "mxv")
    oma = node("Sub", [cone, al], "one_minus_alpha")
    lo2 = node("Add", [node("Mul", [al, lo], "alo"), node("Mul", [oma, mn], "omn")], "lo2")
    hi2 = node("Add", [node("Mul", [al, hi], "ahi"), node("Mul", [oma, mxv], "omx")], "hi2")
    rng = node("Max", [node("Sub", [hi2, lo2], "rng0"), ceps], "rng")
    y = node("Clip", [node("Div", [node("Sub", [raw, lo2], "ysub"), rng], "ydiv"), czero, cone], "y")
    node("Concat", [lo2, hi2, al], "norm_state_out", axis=0)

    def fuse(ca: str, cb_: str, tag: str) -> str:
        da = node("Sub", [ca, chalf], f"{tag}_da")
        db = node("Sub", [cb_, chalf], f"{tag}_db")
        wa = node("Abs", [da], f"{tag}_wa")
        wb = node("Abs", [db], f"{tag}_wb")
        num = node("Add", [node("Mul", [da, wa], f"{tag}_na"), node("Mul", [db, wb], f"{tag}_nb")], f"{tag}_num")
        den = node("Add", [node("Add", [wa, wb], f"{tag}_w"), ceps], f"{tag}_den")
        return node("Div", [num, den], f"{tag}_c")  # fused chroma minus 0.5

    cr = fuse(cra, crb, "cr")
    cb = fuse(cba, cbb, "cb")
    ob = node("Add", [y, node("Mul", [cb, const("kbcb", 1.773)], "bcb")], "ob")
    og = node("Add", [node("Add", [y, node("Mul", [cr, const("kgcr", -0.714)], "gcr")], "og0"),
                      node("Mul", [cb, const("kgcb", -0.344)], "gcb")], "og")
    orr = node("Add", [y, node("Mul", [cr, const("krcr", 1.403)], "rcr")], "or")
    bgr = node("Concat", [ob, og, orr], "bgr", axis=2)
    scaled = node("Clip", [node("Mul", [bgr, c255], "bgr255"), czero, c255], "bgrc")
    rounded = node("Floor", [node("Add", [scaled, chalf], "bgrh")], "bgrr")
    node("Cast", [rounded], "fused", to=TensorProto.UINT8)

    graph = helper.make_graph(
        nodes,
        "standin_colour",
        [
            helper.make_tensor_value_info("a", TensorProto.UINT8, ["H", "W", 3]),
            helper.make_tensor_value_info("b", TensorProto.UINT8, ["H", "W", 3]),
            helper.make_tensor_value_info("norm_state", TensorProto.FLOAT, [3]),
        ],
        [
            helper.make_tensor_value_info("fused", TensorProto.UINT8, ["H", "W", 3]),
            helper.make_tensor_value_info("norm_state_out", TensorProto.FLOAT, [3]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (
        ("refusion.model_card", json.dumps(card or STANDIN_CARD)),
        ("refusion.graph", graph_kind),
        ("refusion.precision", "fp32"),
    ):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path


def standin_reference(a: np.ndarray, b: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the stand-in graph computes, in numpy (for checking the runtime's state handling)."""
    from refusion.runtime import colour

    fa = colour.bgr_to_ycrcb(a.astype(np.float32) / 255.0)
    fb = colour.bgr_to_ycrcb(b.astype(np.float32) / 255.0)
    raw = 0.6 * np.maximum(fa[..., 0], fb[..., 0]) + 0.2
    lo_s, hi_s, al = (float(v) for v in state)
    lo = al * lo_s + (1 - al) * float(raw.min())
    hi = al * hi_s + (1 - al) * float(raw.max())
    y = np.clip((raw - lo) / max(hi - lo, 1e-6), 0, 1)
    cr = colour.fuse_chroma(fa[..., 1], fb[..., 1], 0.5)
    cb = colour.fuse_chroma(fa[..., 2], fb[..., 2], 0.5)
    bgr = colour.ycrcb_to_bgr(np.stack([y, cr, cb], -1).astype(np.float32))
    out = np.floor(np.clip(bgr * 255.0, 0, 255) + 0.5).astype(np.uint8)
    return out, np.array([lo, hi, al], np.float32)


@pytest.fixture()
def standin(tmp_path: Path) -> Path:
    return build_standin_colour_onnx(tmp_path / "standin.colour.onnx")


def _pair(seed: int = 0, h: int = 24, w: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    a[..., 1] = a[..., 2] = a[..., 0]  # a grey source (IR)
    b = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return a, b


def test_standin_matches_reference(standin: Path) -> None:
    from refusion.runtime.backends import open_backend

    a, b = _pair()
    with open_backend(standin, "ort-cpu") as be:
        for state in ([0, 0, 0], [0.1, 0.9, 0.9], [0, 1, 1]):
            st = np.array(state, np.float32)
            fused, st_out = be.infer(a, b, st)
            ref, ref_st = standin_reference(a, b, st)
            assert fused.shape == a.shape and fused.dtype == np.uint8
            assert np.abs(fused.astype(int) - ref).max() <= 1
            np.testing.assert_allclose(st_out, ref_st, rtol=1e-5, atol=1e-6)


def test_backend_reports_card_and_provider(standin: Path) -> None:
    from refusion.runtime.backends import open_backend

    with open_backend(standin, "auto") as be:
        assert be.name == "onnxruntime"
        assert be.device in ("cpu", "cuda")
        assert be.card["task"] == "ivif"
        assert be.sources == ("ir", "vis")
        assert "ExecutionProvider" in be.describe()


def test_session_loader_checks_without_a_runner(standin: Path, tmp_path: Path) -> None:
    """load_session opens and checks the colour graph; no OrtBackend is needed to read what it holds."""
    from refusion.runtime.backends.ort import CPU_EP, load_session
    from refusion.runtime.errors import EngineError

    loaded = load_session(standin, "cpu")
    assert loaded.providers == [CPU_EP] and loaded.device == "cpu"
    assert loaded.card["task"] == "ivif" and loaded.precision == "fp32"
    assert [i.name for i in loaded.session.get_inputs()] == ["a", "b", "norm_state"]
    core = build_standin_colour_onnx(tmp_path / "m.onnx", graph_kind="core")
    with pytest.raises(EngineError, match="colour graph"):
        load_session(core, "cpu")


def test_core_graph_refused_with_hint(tmp_path: Path) -> None:
    from refusion.runtime.backends import open_backend
    from refusion.runtime.errors import EngineError

    core = build_standin_colour_onnx(tmp_path / "m.onnx", graph_kind="core")
    with pytest.raises(EngineError, match="colour graph"):
        open_backend(core, "ort-cpu")


def test_missing_and_corrupt_model(tmp_path: Path) -> None:
    from refusion.runtime.backends import open_backend
    from refusion.runtime.errors import EngineError

    with pytest.raises(EngineError, match="not found"):
        open_backend(tmp_path / "nope.colour.onnx", "auto")
    bad = tmp_path / "bad.colour.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(EngineError, match="cannot load"):
        open_backend(bad, "ort-cpu")


def test_tensorrt_without_gpu_is_a_clear_error(tmp_path: Path) -> None:
    """Asking for TensorRT on a machine without it (or without a GPU) never crashes."""
    from refusion.runtime.backends import open_backend
    from refusion.runtime.backends.tensorrt import gpu_count
    from refusion.runtime.errors import EngineError, MissingDependencyError

    if gpu_count() > 0:
        pytest.skip("a GPU is present; this checks the GPU-less path")
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"\0" * 16)
    with pytest.raises((EngineError, MissingDependencyError)):
        open_backend(plan, "tensorrt")


def test_trt_api_names_are_plain_strings() -> None:
    from refusion.runtime.backends.tensorrt import TRT_API_NAMES

    assert TRT_API_NAMES and all(isinstance(n, str) and n.isidentifier() for n in TRT_API_NAMES)
    assert "execute_async_v3" in TRT_API_NAMES and "engine_host_code_allowed" in TRT_API_NAMES


def test_runtime_imports_no_torch() -> None:
    code = (
        "import sys, refusion.runtime, refusion.runtime.cli, refusion.runtime.pipeline, "
        "refusion.runtime.backends.ort, refusion.runtime.backends.tensorrt, refusion.runtime.demo; "
        "bad = [m for m in ('torch', 'tensorrt', 'onnx') if m in sys.modules]; "
        "sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_io_binding_path_matches_plain_run(standin: Path) -> None:
    """The IO-binding code used with the CUDA provider, exercised with CPU OrtValues."""
    from refusion.runtime.backends import open_backend

    with open_backend(standin, "ort-cpu") as be:
        plain = [be.infer(*_pair(i), np.array([0.1, 0.8, 0.5], np.float32)) for i in range(2)]
        plain = [(f.copy(), s.copy()) for f, s in plain]
        be.io_binding_device = "cpu"
        for i, (f_ref, s_ref) in enumerate(plain):
            f, s = be.infer(*_pair(i), np.array([0.1, 0.8, 0.5], np.float32))
            np.testing.assert_array_equal(f, f_ref)
            np.testing.assert_allclose(s, s_ref)
        f, _ = be.infer(*_pair(0, 12, 20), np.zeros(3, np.float32))  # a new size rebinds
        assert f.shape == (12, 20, 3)
