"""Structural checks of an FP16 ONNX graph: the float32 islands must be there.

ONNX Runtime on CPU cannot show the float16 overflow of the q/k L2 normalisation
(its ReduceL2 keeps more precision internally), but TensorRT, in a strongly typed
network, stores the sum of squares in the input's type: above 65504 it is inf and
attention silently becomes uniform. So the protection is checked in the graph
itself: every reduction whose axes depend on H or W must take a float32 input.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

REDUCE_OPS = frozenset(
    {
        "ReduceL1",
        "ReduceL2",
        "ReduceLogSum",
        "ReduceLogSumExp",
        "ReduceMax",
        "ReduceMean",
        "ReduceMin",
        "ReduceProd",
        "ReduceSum",
        "ReduceSumSquare",
    }
)

#: A reduced axis longer than this (when static) counts as spatial.
MAX_NON_SPATIAL = 4096


@dataclass(frozen=True)
class Reduction:
    """One reduction node, as the lint sees it."""

    node: str
    op: str
    dtype: str  # input element type name, e.g. "FLOAT16"
    spatial: bool  # axes depend on H or W (dynamic or > MAX_NON_SPATIAL)


def _onnx():
    from refusion.runtime._deps import require

    return require("onnx", "FP16 graph checks")


def _elem_name(onnx: Any, elem: int) -> str:
    return onnx.TensorProto.DataType.Name(elem)


def reductions(model: Any) -> list[Reduction]:
    """All Reduce* nodes of ``model`` (an onnx.ModelProto) with input dtype and whether they span H*W."""
    onnx = _onnx()
    from onnx import numpy_helper

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    g = inferred.graph
    types: dict[str, Any] = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        types[vi.name] = vi.type.tensor_type
    consts: dict[str, Any] = {init.name: numpy_helper.to_array(init) for init in g.initializer}
    for node in g.node:
        if node.op_type == "Constant" and node.attribute:
            attr = node.attribute[0]
            if attr.name == "value":
                consts[node.output[0]] = numpy_helper.to_array(attr.t)
    out: list[Reduction] = []
    for i, node in enumerate(g.node):
        if node.op_type not in REDUCE_OPS:
            continue
        name = node.name or f"{node.op_type}#{i}"
        tt = types.get(node.input[0])
        if tt is None or not tt.HasField("shape"):
            out.append(Reduction(name, node.op_type, _elem_name(onnx, tt.elem_type) if tt else "UNKNOWN", True))
            continue
        rank = len(tt.shape.dim)
        axes: list[int] | None = None
        for attr in node.attribute:
            if attr.name == "axes":
                axes = list(attr.ints)
        if axes is None and len(node.input) > 1 and node.input[1]:
            arr = consts.get(node.input[1])
            axes = [int(a) for a in arr.reshape(-1)] if arr is not None else None
            if arr is None:  # axes computed at run time: assume the worst
                out.append(Reduction(name, node.op_type, _elem_name(onnx, tt.elem_type), True))
                continue
        if not axes:
            axes = list(range(rank))
        spatial = False
        for ax in axes:
            dim = tt.shape.dim[ax % rank]
            if not dim.HasField("dim_value") or dim.dim_value > MAX_NON_SPATIAL:
                spatial = True
        out.append(Reduction(name, node.op_type, _elem_name(onnx, tt.elem_type), spatial))
    return out


def lint_fp16(model: Any, graph: str) -> list[str]:
    """Problems of an FP16 graph (empty list = fine).

    Checks: I/O types (core float32, colour uint8 frames + float32 state); the
    interior really is float16 (float16 Conv weights); every reduction over H*W
    takes float32 input.
    """
    onnx = _onnx()
    problems: list[str] = []
    g = model.graph
    want = (
        {"a": "FLOAT", "b": "FLOAT", "fused": "FLOAT"}
        if graph == "core"
        else {"a": "UINT8", "b": "UINT8", "norm_state": "FLOAT", "fused": "UINT8", "norm_state_out": "FLOAT"}
    )
    have = {vi.name: _elem_name(onnx, vi.type.tensor_type.elem_type) for vi in list(g.input) + list(g.output)}
    for name, dtype in want.items():
        if have.get(name) != dtype:
            problems.append(f"I/O tensor {name!r} is {have.get(name, 'missing')}, expected {dtype}")
    inits = {init.name: init.data_type for init in g.initializer}
    conv_weights = [inits.get(n.input[1]) for n in g.node if n.op_type == "Conv" and len(n.input) > 1]
    if not conv_weights:
        problems.append("graph has no Conv node")
    elif any(t != onnx.TensorProto.FLOAT16 for t in conv_weights):
        n32 = sum(t != onnx.TensorProto.FLOAT16 for t in conv_weights)
        problems.append(f"{n32} of {len(conv_weights)} Conv weights are not float16: the interior is not FP16")
    for r in reductions(model):
        if r.spatial and r.dtype != "FLOAT":
            problems.append(
                f"{r.op} node {r.node!r} reduces over H*W in {r.dtype}: float16 overflows above 65504 "
                "(the sum of squares reaches ~6e5 at 640x480); it needs a float32 island"
            )
    return problems
