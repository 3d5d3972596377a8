"""export/optimize.py: the rewrites fire on F's graphs and keep the numbers (ORT, within 1e-5)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from refusion.export import optimize as O  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from refusion.export.onnx_export import build_card, export_graph
    from refusion.train.checkpoint import LoadedModel
    from refusion.train.networks import FusionNet

    torch.manual_seed(0)
    net = FusionNet().eval()
    folder = tmp_path_factory.mktemp("onnx")
    ckpt = folder / "w.pt"
    ckpt.write_bytes(b"x")  # build_card hashes the file
    card = build_card(LoadedModel(net, "ivif", "refusion", ckpt, {}))
    paths = {}
    for graph in ("core", "colour"):
        paths[graph] = folder / f"m.{graph}.onnx"
        export_graph(net, graph, False, paths[graph], card, optimize=False)  # the traced graph
    return paths


@pytest.mark.parametrize("graph", ["core", "colour"])
def test_rewrites_fire_and_keep_numbers(exported, graph):
    model = onnx.load(str(exported[graph]))
    opt, rep = O.optimize_model(model)
    assert rep.split_convs == 15  # 8 encoder + 4 decoder + 3 AFM chunked conv chains
    assert rep.late_normalised == 8  # every attention product (4 encoder, 2 decoder, 2 AFM)
    assert rep.nodes_after < rep.nodes_before
    before, after = Counter(n.op_type for n in model.graph.node), Counter(n.op_type for n in opt.graph.node)
    assert after["Slice"] < before["Slice"] and after["Conv"] > before["Conv"]
    # inputs, outputs and metadata are untouched
    assert [i.name for i in opt.graph.input] == [i.name for i in model.graph.input]
    assert [o.name for o in opt.graph.output] == [o.name for o in model.graph.output]
    assert {p.key: p.value for p in opt.metadata_props} == {p.key: p.value for p in model.metadata_props}
    assert O.verify_equal(model, opt, sizes=((48, 64), (37, 53))) <= O.VERIFY_ATOL
    assert len(model.graph.node) == rep.nodes_before  # the input model is not modified


def test_idempotent(exported):
    opt, _ = O.optimize_model(onnx.load(str(exported["core"])))
    again, rep = O.optimize_model(opt)
    assert rep.split_convs == 0 and rep.nodes_after == len(opt.graph.node)


def test_verify_equal_catches_a_change(exported):
    from refusion.runtime.errors import EngineError

    model = onnx.load(str(exported["core"]))
    bad, _ = O.optimize_model(model)
    # (a q or k weight would not do: the L2 normalisation makes them scale-invariant)
    conv_w = next(i for i in bad.graph.initializer if i.name.endswith("_pw_weight"))
    arr = onnx.numpy_helper.to_array(conv_w) + np.random.default_rng(0).normal(0, 0.5, conv_w.dims)
    conv_w.CopyFrom(onnx.numpy_helper.from_array(arr.astype(np.float32), conv_w.name))
    with pytest.raises(EngineError, match="differs"):
        O.verify_equal(model, bad, sizes=((32, 32),))
