"""The float16 overflow of the q/k L2 normalisation, and the float32 islands that prevent it.

ONNX Runtime on CPU cannot show the overflow (its reductions keep more precision), so
it is shown here by emulation (a sum of squares stored in float16, as a strongly
typed TensorRT network stores it) and guarded structurally by the FP16 lint.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

import torch.nn.functional as F  # noqa: E402

from refusion.export.fp16 import lint_fp16, reductions  # noqa: E402
from refusion.export.onnx_export import export_graph  # noqa: E402
from refusion.runtime.card import ModelCard  # noqa: E402
from refusion.runtime.imageio import read_image  # noqa: E402
from refusion.runtime.colour import luma_bgr  # noqa: E402
from refusion.train import networks  # noqa: E402
from refusion.train.checkpoint import load_fusion_model  # noqa: E402

FP16_MAX = 65504.0


def _naive_fp16_normalize(x: torch.Tensor) -> torch.Tensor:
    """L2 normalisation with the sum of squares stored in float16 (what an all-FP16 engine does)."""
    h = x.to(torch.float16)
    sumsq = (h.float() ** 2).sum(-1, keepdim=True).to(torch.float16)  # fp32 accumulate, fp16 store
    norm = torch.sqrt(sumsq.float()).to(torch.float16)
    return (h / torch.clamp(norm, min=torch.finfo(torch.float16).tiny)).to(torch.float16)


def _attention(q: torch.Tensor, k: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    return torch.softmax((q.float() @ k.float().transpose(-2, -1)) * temperature.float(), dim=-1)


@pytest.fixture(scope="module")
def qk_1080p(official: Path):
    """Real q, k of the first IVIF encoder block on a 1080x1920 infrared frame, (1, heads, c, H*W) float32."""
    import cv2

    net = load_fusion_model(official / "ReFusion_IVIF.pth", "ivif").net
    ir = read_image(official / "test_cases" / "IVIF" / "infrared" / "00710N.png")
    y = luma_bgr(cv2.resize(ir, (1920, 1080), interpolation=cv2.INTER_CUBIC))
    block = net.encoder_a[0]
    with torch.no_grad():
        x = net.embed_a(torch.from_numpy(y)[None, None])
        q, k, _ = block.attn.qkv_dw(block.attn.qkv(block.norm1(x))).chunk(3, dim=1)
        heads = block.attn.heads
        b, c, h, w = q.shape
        q = q.reshape(b, heads, c // heads, h * w)
        k = k.reshape(b, heads, c // heads, h * w)
    return q, k, block.attn.temperature.detach()


def test_fp16_sum_of_squares_overflows_at_1080p(qk_1080p):
    q, k, temperature = qk_1080p
    sumsq = (q.double() ** 2).sum(-1)
    assert float(sumsq.max()) > FP16_MAX  # a realistic activation really exceeds float16 at 1080p
    qn, kn = _naive_fp16_normalize(q), _naive_fp16_normalize(k)
    overflowed = ~torch.isfinite((q.half().float() ** 2).sum(-1).half())
    assert overflowed.any()
    # q / inf = 0: the overflowed rows are wiped out and their attention becomes uniform
    assert torch.all(qn.float()[overflowed] == 0)
    attn_bad = _attention(qn, kn, temperature)
    c = q.shape[2]
    rows = overflowed  # (1, heads, c)
    assert torch.allclose(attn_bad[rows], torch.full_like(attn_bad[rows], 1.0 / c), atol=1e-6)
    attn_ref = _attention(F.normalize(q, dim=-1), F.normalize(k, dim=-1), temperature)
    assert float((attn_bad - attn_ref).abs().max()) > 0.05  # silently wrong, not NaN


def test_float32_island_is_exact_at_1080p(qk_1080p):
    """networks.l2_normalize_spatial on float16 input (the island) matches float32: no inf, no uniform attention."""
    q, k, temperature = qk_1080p
    qh, kh = networks.l2_normalize_spatial(q.half()), networks.l2_normalize_spatial(k.half())
    assert qh.dtype == torch.float16 and torch.isfinite(qh).all()
    ref_q = F.normalize(q, dim=-1)
    assert float((qh.float() - ref_q).abs().max()) < 1e-3
    attn = _attention(qh, kh, temperature)
    attn_ref = _attention(ref_q, F.normalize(k, dim=-1), temperature)
    assert float((attn - attn_ref).abs().max()) < 5e-3


def test_lint_catches_a_missing_island(tmp_path, monkeypatch):
    """Export a half model whose L2 normalisation has no float32 island: the lint must refuse it."""
    card = ModelCard(task="ivif", sources=("ir", "vis"))
    net = networks.FusionNet().eval()
    good = export_graph(net, "core", True, tmp_path / "good.onnx", card)
    assert lint_fp16(good, "core") == []
    l2 = [r for r in reductions(good) if r.op == "ReduceL2"]
    assert len(l2) == 16 and all(r.dtype == "FLOAT" and r.spatial for r in l2)

    monkeypatch.setattr(networks, "l2_normalize_spatial", lambda x: F.normalize(x, dim=-1))
    bad = export_graph(net, "core", True, tmp_path / "bad.onnx", card)
    problems = lint_fp16(bad, "core")
    assert sum("ReduceL2" in p and "FLOAT16" in p for p in problems) == 16


def test_lint_ignores_channel_reductions():
    """A float16 reduction over a small static (channel) axis is fine; over a dynamic axis it is not."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 16, "H", "W"])
    y1 = helper.make_tensor_value_info("y1", TensorProto.FLOAT16, None)
    y2 = helper.make_tensor_value_info("y2", TensorProto.FLOAT16, None)
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["y1"], axes=[1], name="chan"),
        helper.make_node("ReduceMax", ["x"], ["y2"], axes=[2, 3], name="spatial"),
    ]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y1, y2]), opset_imports=[helper.make_opsetid("", 17)])
    found = {r.node: r for r in reductions(model)}
    assert not found["chan"].spatial and found["spatial"].spatial
    assert np.array([found["spatial"].dtype == "FLOAT16"]).all()
