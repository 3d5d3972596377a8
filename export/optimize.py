"""Export-time ONNX graph rewrites that make ONNX Runtime CPU faster and keep the numbers.

Pure ``onnx`` graph manipulation (no torch, no onnxruntime needed to rewrite; onnxruntime
only to verify). The passes:

- :func:`fold_static_channels` -- the TorchScript exporter computes ``chunk``'s slice
  bounds at run time from ``Shape -> Gather(1) -> Div -> Mul``. The channel count of
  every Conv output is known from its weight, so these chains are folded to constants.
- :func:`split_chunked_convs` -- ``Conv1x1(W) -> DepthwiseConv3x3(D) -> chunk(k)`` (the
  qkv projection of MDTA/AFM and the GDFN expansion, 21 times in F) becomes k independent
  ``Conv1x1(W[i]) -> DepthwiseConv3x3(D[i])`` pairs. Each output channel is computed by
  the same dot products as before, so the output is unchanged (equal within 1e-6 in
  ORT), but the k full-resolution ``Slice`` copies disappear, and so does the layout
  reorder ORT inserts before each of them.
- :func:`remove_dead_nodes` -- drops nodes whose outputs nobody reads.

:func:`optimize_model` runs them in order; :func:`verify_equal` checks an optimised
graph against the original in ONNX Runtime (the exporter calls both).

FP16 graphs (bound for TensorRT) get :func:`optimize_fp16`: only the shape folding, the
conv split and the dead-node removal. Parsed by tensorrt_rtx 1.7, the IVIF colour graph
goes from 2511 layers (1747 of them INT64 shape arithmetic) to 1300 (528), and its plan
from 6.6 MB to 4.6 MB at the same build time. The other two passes are left out on
purpose: :func:`normalise_after_matmul` would move the L2 normalisation out of its
float32 island, so ``q @ k^T`` would sum H*W products of unnormalised float16 values
(the overflow the island exists to prevent); :func:`duplicate_shared_transposes` only
helps ONNX Runtime's NCHWc reorders and would add layers for TensorRT.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from refusion.runtime.size import Size

#: Largest |optimised - original| accepted by :func:`verify_equal` (float outputs in [0, 1]).
VERIFY_ATOL = 1e-5
#: The same for FP16 graphs: the split convs compute the same dot products, but ORT's float16
#: kernels round them in another order (3e-4 seen on the IVIF core graph, 0.08 of an 8-bit level).
VERIFY_ATOL_FP16 = 1e-3


def _onnx() -> Any:
    from refusion.runtime._deps import require

    return require("onnx", "ONNX graph optimisation")


@dataclass(frozen=True)
class OptimizeReport:
    """What :func:`optimize_model` changed."""

    folded: int  # Shape/Gather/arithmetic nodes replaced by constants
    split_convs: int  # Conv1x1 -> DWConv -> chunk patterns split
    removed: int  # dead nodes removed
    nodes_before: int
    nodes_after: int
    late_normalised: int = 0  # attention products normalised after the matmul
    transpose_copies: int = 0  # Transposes duplicated per reading conv

    def describe(self) -> str:
        return (
            f"graph optimised: {self.nodes_before} -> {self.nodes_after} nodes "
            f"({self.split_convs} chunked conv chains split, {self.late_normalised} attention products "
            f"normalised late, {self.transpose_copies} transpose copies, {self.folded} shape nodes folded)"
        )


def _attrs(node: Any) -> dict[str, Any]:
    onnx = _onnx()
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _constants(graph: Any) -> dict[str, np.ndarray]:
    """Values of initializers and Constant nodes (value attribute only), by tensor name."""
    onnx = _onnx()
    vals = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            vals[n.output[0]] = onnx.numpy_helper.to_array(n.attribute[0].t)
    return vals


def _conv_out_channels(graph: Any, consts: dict[str, np.ndarray]) -> dict[str, int]:
    """Output tensor name -> channel count, for every Conv with a constant weight."""
    out = {}
    for n in graph.node:
        if n.op_type == "Conv" and n.input[1] in consts:
            out[n.output[0]] = int(consts[n.input[1]].shape[0])
    return out


_ARITH: dict[str, Callable[..., np.ndarray]] = {
    "Div": lambda a, b: (a // b) if np.issubdtype(a.dtype, np.integer) else a / b,
    "Mul": lambda a, b: a * b,
    "Add": lambda a, b: a + b,
    "Sub": lambda a, b: a - b,
}


def fold_static_channels(model: Any) -> int:
    """Fold ``Shape(conv_out)[1]`` and the integer arithmetic on it into constants, in place.

    Only channel counts known from Conv weights are used; H and W stay dynamic. Returns
    the number of nodes replaced by Constant nodes.
    """
    onnx = _onnx()
    g = model.graph
    consts = _constants(g)
    channels = _conv_out_channels(g, consts)
    shape_of: dict[str, str] = {}  # Shape output -> the conv output it measures
    folded = 0
    nodes = _copy_nodes(g)
    for idx, n in enumerate(nodes):
        value = None
        if n.op_type == "Shape" and n.input[0] in channels and not _attrs(n):
            shape_of[n.output[0]] = n.input[0]
            continue
        if n.op_type == "Gather" and n.input[0] in shape_of and n.input[1] in consts:
            index = consts[n.input[1]]
            if index.size == 1 and int(index.reshape(-1)[0]) == 1 and _attrs(n).get("axis", 0) == 0:
                value = np.full(index.shape, channels[shape_of[n.input[0]]], dtype=np.int64)
        elif n.op_type in _ARITH and all(i in consts for i in n.input):
            a, b = (consts[i] for i in n.input)
            value = np.asarray(_ARITH[n.op_type](a, b)).astype(np.result_type(a, b))
        elif n.op_type == "Unsqueeze" and all(i in consts for i in n.input) and len(n.input) == 2:
            value = np.expand_dims(consts[n.input[0]], tuple(int(x) for x in consts[n.input[1]]))
        elif n.op_type == "Concat" and all(i in consts for i in n.input):
            value = np.concatenate([np.atleast_1d(consts[i]) for i in n.input], axis=_attrs(n).get("axis", 0))
        elif n.op_type == "Cast" and n.input[0] in consts:
            to = onnx.helper.tensor_dtype_to_np_dtype(_attrs(n)["to"])
            value = consts[n.input[0]].astype(to)
        if value is None:
            continue
        name = n.output[0]
        const = onnx.helper.make_node(
            "Constant", [], [name], name=(n.name or name) + "_folded",
            value=onnx.numpy_helper.from_array(np.asarray(value), name + "_value"),
        )
        nodes[idx] = const
        consts[name] = np.asarray(value)
        folded += 1
    _set_nodes(g, nodes)
    return folded


def _copy_nodes(graph: Any) -> list[Any]:
    onnx = _onnx()
    out = []
    for n in graph.node:
        c = onnx.NodeProto()
        c.CopyFrom(n)
        out.append(c)
    return out


def _set_nodes(graph: Any, nodes: list[Any]) -> None:
    del graph.node[:]
    graph.node.extend(nodes)


def _consumers_of(nodes: Sequence[Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for n in nodes:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def _slice_range(node: Any, consts: dict[str, np.ndarray]) -> tuple[int, int] | None:
    """(start, end) of a Slice along axis 1 with step 1 and constant bounds, else None."""
    if node.op_type != "Slice" or len(node.input) < 4:
        return None
    if not all(i in consts for i in node.input[1:4]):
        return None
    starts, ends, axes = (np.atleast_1d(consts[i]) for i in node.input[1:4])
    if starts.size != 1 or int(axes[0]) != 1:
        return None
    if len(node.input) > 4 and node.input[4]:
        if node.input[4] not in consts or int(np.atleast_1d(consts[node.input[4]])[0]) != 1:
            return None
    return int(starts[0]), int(ends[0])


def split_chunked_convs(model: Any) -> int:
    """Split ``Conv1x1 -> depthwise Conv -> Slice*k on channels`` into k conv pairs, in place.

    The chain must be bias-free or carry biases (both are split), the 1x1 conv must feed
    only the depthwise conv, and the depthwise output must be read only by Slices that
    tile its channels (and by Shape nodes, which become dead). Run
    :func:`fold_static_channels` first so the Slice bounds are constants.
    Returns the number of chains split.
    """
    g = model.graph
    consts = _constants(g)
    inits = {i.name: i for i in g.initializer}
    nodes = _copy_nodes(g)
    producer = {o: n for n in nodes for o in n.output}
    graph_outputs = {o.name for o in g.output}
    count = 0
    for dw in [n for n in nodes if n.op_type == "Conv"]:
        chain = _chunked_chain(dw, producer, _consumers_of(nodes), consts, inits, graph_outputs)
        if chain is None:
            continue
        pw, slices, ranges = chain
        pos = next(i for i, n in enumerate(nodes) if n is pw)
        new_nodes = _split_chain(g, pw, dw, slices, ranges, consts)
        gone = {id(pw), id(dw), *(id(x) for x in slices)}
        nodes = [n for n in nodes[:pos] if id(n) not in gone] + new_nodes + [n for n in nodes[pos:] if id(n) not in gone]
        producer = {o: n for n in nodes for o in n.output}
        count += 1
    _set_nodes(g, nodes)
    return count


def _chunked_chain(dw: Any, producer: dict[str, Any], consumers: dict[str, list[Any]], consts: dict[str, np.ndarray],
                   inits: dict[str, Any], graph_outputs: set[str]) -> tuple[Any, list[Any], list[tuple[int, int]]] | None:
    """(1x1 conv, Slices, their channel ranges) when ``dw`` is the depthwise conv of a splittable chain, else None."""
    wd = consts.get(dw.input[1])
    if wd is None or dw.input[1] not in inits:
        return None
    ch = int(wd.shape[0])
    if _attrs(dw).get("group", 1) != ch or wd.shape[1] != 1 or ch < 2:
        return None
    pw = producer.get(dw.input[0])
    if pw is None or pw.op_type != "Conv" or pw.input[1] not in inits:
        return None
    w1 = consts[pw.input[1]]
    if w1.shape[2:] != (1, 1) or _attrs(pw).get("group", 1) != 1 or len(consumers.get(pw.output[0], [])) != 1:
        return None
    readers = consumers.get(dw.output[0], [])
    slices = [r for r in readers if r.op_type != "Shape"]
    ranges = [_slice_range(s, consts) for s in slices]
    if len(slices) < 2 or any(r is None for r in ranges) or dw.output[0] in graph_outputs:
        return None
    ranges = [(max(0, s), min(ch, e)) for s, e in ranges]  # type: ignore[misc]
    if sorted(ranges) != sorted(set(ranges)):
        return None
    covered = sorted(ranges)
    if covered[0][0] != 0 or covered[-1][1] != ch or any(a[1] != b[0] for a, b in zip(covered, covered[1:])):
        return None
    return pw, slices, ranges


def _split_chain(g: Any, pw: Any, dw: Any, slices: list[Any], ranges: list[tuple[int, int]],
                 consts: dict[str, np.ndarray]) -> list[Any]:
    """One (1x1 conv, depthwise conv) pair per Slice, their weights added to ``g``; returns the new nodes."""
    onnx = _onnx()
    w1, wd = consts[pw.input[1]], consts[dw.input[1]]
    b1 = consts.get(pw.input[2]) if len(pw.input) > 2 and pw.input[2] else None
    bd = consts.get(dw.input[2]) if len(dw.input) > 2 and dw.input[2] else None
    a_dw = _attrs(dw)
    new_nodes = []
    for k, (sl, (s, e)) in enumerate(zip(slices, ranges)):
        tag = f"{dw.name or dw.output[0]}_part{k}"
        w1_name, wd_name = f"{tag}_pw_weight", f"{tag}_dw_weight"
        g.initializer.append(onnx.numpy_helper.from_array(np.ascontiguousarray(w1[s:e]), w1_name))
        g.initializer.append(onnx.numpy_helper.from_array(np.ascontiguousarray(wd[s:e]), wd_name))
        pw_inputs = [pw.input[0], w1_name]
        if b1 is not None:
            pw_inputs.append(f"{tag}_pw_bias")
            g.initializer.append(onnx.numpy_helper.from_array(np.ascontiguousarray(b1[s:e]), pw_inputs[-1]))
        dw_inputs = [f"{tag}_pw_out", wd_name]
        if bd is not None:
            dw_inputs.append(f"{tag}_dw_bias")
            g.initializer.append(onnx.numpy_helper.from_array(np.ascontiguousarray(bd[s:e]), dw_inputs[-1]))
        new_nodes.append(onnx.helper.make_node("Conv", pw_inputs, [f"{tag}_pw_out"], name=f"{tag}_pw", **_attrs(pw)))
        attrs = dict(a_dw, group=e - s)
        # The Slice's output name is kept, so everything downstream is untouched.
        new_nodes.append(onnx.helper.make_node("Conv", dw_inputs, [sl.output[0]], name=f"{tag}_dw", **attrs))
    return new_nodes


def _norm_of(div: Any, producer: dict[str, Any]) -> str | None:
    """For ``Div(x, [Expand](Clip(ReduceL2(x, axes=[-1], keepdims=1))))`` return the Clip output, else None."""
    if div is None or div.op_type != "Div":
        return None
    d = producer.get(div.input[1])
    if d is not None and d.op_type == "Expand":
        d = producer.get(d.input[0])
    if d is None or d.op_type != "Clip":
        return None
    r = producer.get(d.input[0])
    if r is None or r.op_type != "ReduceL2" or r.input[0] != div.input[0]:
        return None
    a = _attrs(r)
    if a.get("keepdims", 1) != 1 or list(a.get("axes", [])) != [-1]:
        return None
    return d.output[0]


def normalise_after_matmul(model: Any) -> int:
    """``(q / |q|) @ (k / |k|)^T`` -> ``(q @ k^T) / |q| / |k|^T``, in place; returns the count rewritten.

    F.normalize over H*W followed by the c x c attention product: dividing the small
    (c x c) product instead of the two full-resolution q and k tensors removes two
    full-size Div and Expand passes per attention (16 each in F). The result differs
    by float rounding only (below 1e-6 on F's [0, 1] output).
    """
    onnx = _onnx()
    g = model.graph
    nodes = _copy_nodes(g)
    producer = {o: n for n in nodes for o in n.output}
    consumers = _consumers_of(nodes)
    outputs = {o.name for o in g.output}
    count = 0
    for mm in [n for n in nodes if n.op_type == "MatMul"]:
        div_q = producer.get(mm.input[0])
        tr = producer.get(mm.input[1])
        if tr is None or tr.op_type != "Transpose" or list(_attrs(tr).get("perm", [])) != [0, 1, 3, 2]:
            continue
        div_k = producer.get(tr.input[0])
        nq, nk = _norm_of(div_q, producer), _norm_of(div_k, producer)
        if nq is None or nk is None:
            continue
        if any(len(consumers.get(t, [])) != 1 or t in outputs for t in (div_q.output[0], div_k.output[0], tr.output[0])):
            continue
        q, k, tag = div_q.input[0], div_k.input[0], (mm.name or mm.output[0]) + "_late_norm"
        new = [
            onnx.helper.make_node("Transpose", [k], [tag + "_kT"], name=tag + "_kT", perm=[0, 1, 3, 2]),
            onnx.helper.make_node("MatMul", [q, tag + "_kT"], [tag + "_qk"], name=tag + "_qk"),
            onnx.helper.make_node("Div", [tag + "_qk", nq], [tag + "_qk_nq"], name=tag + "_div_q"),
            onnx.helper.make_node("Transpose", [nk], [tag + "_nkT"], name=tag + "_nkT", perm=[0, 1, 3, 2]),
            onnx.helper.make_node("Div", [tag + "_qk_nq", tag + "_nkT"], [mm.output[0]], name=tag + "_div_k"),
        ]
        pos = next(i for i, n in enumerate(nodes) if n is mm)
        gone = {id(mm), id(div_q), id(div_k), id(tr)}
        nodes = [n for n in nodes[:pos] if id(n) not in gone] + new + [n for n in nodes[pos:] if id(n) not in gone]
        producer = {o: n for n in nodes for o in n.output}
        consumers = _consumers_of(nodes)
        count += 1
    _set_nodes(g, nodes)
    return count


def duplicate_shared_transposes(model: Any) -> int:
    """Give each Conv reading a shared Transpose its own copy, in place; returns the copies made.

    After :func:`split_chunked_convs`, the LayerNorm's channels-last -> NCHW Transpose feeds
    2-3 convs. ONNX Runtime folds a Transpose into the NCHWc ``ReorderInput`` of a conv only
    when the conv is its sole reader; with one copy per conv it folds every one and the
    full-size Transpose disappears. Exact (no arithmetic changes).
    """
    onnx = _onnx()
    g = model.graph
    nodes = _copy_nodes(g)
    consumers = _consumers_of(nodes)
    outputs = {o.name for o in g.output}
    out: list[Any] = []
    made = 0
    for n in nodes:
        readers = consumers.get(n.output[0], []) if n.op_type == "Transpose" else []
        if len(readers) > 1 and all(r.op_type == "Conv" for r in readers) and n.output[0] not in outputs:
            for j, reader in enumerate(readers):
                copy = onnx.NodeProto()
                copy.CopyFrom(n)
                copy.name = f"{n.name or n.output[0]}_copy{j}"
                copy.output[0] = f"{n.output[0]}_copy{j}"
                for ii, name in enumerate(reader.input):
                    if name == n.output[0]:
                        reader.input[ii] = copy.output[0]
                out.append(copy)
            made += len(readers)
            continue
        out.append(n)
    _set_nodes(g, out)
    return made


def remove_dead_nodes(model: Any) -> int:
    """Drop nodes (and initializers) that no graph output depends on, in place; returns the node count removed."""
    g = model.graph
    needed = {o.name for o in g.output}
    keep = []
    for n in reversed(_copy_nodes(g)):
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(i for i in n.input if i)
    removed = len(g.node) - len(keep)
    keep.reverse()
    del g.node[:]
    g.node.extend(keep)
    used = [i for i in g.initializer if i.name in needed]
    del g.initializer[:]
    g.initializer.extend(used)
    return removed


def optimize_model(model: Any, late_normalise: bool = True) -> tuple[Any, OptimizeReport]:
    """A rewritten copy of ``model`` (onnx.ModelProto) and what changed; ``model`` is not modified.

    Inputs, outputs, metadata and numbers (within :data:`VERIFY_ATOL`) are unchanged.
    """
    onnx = _onnx()
    out = onnx.ModelProto()
    out.CopyFrom(model)
    before = len(out.graph.node)
    folded = split = removed = 0
    while True:  # to a fixed point: folding can expose more chains and dead nodes
        f, s = fold_static_channels(out), split_chunked_convs(out)
        r = remove_dead_nodes(out)
        folded, split, removed = folded + f, split + s, removed + r
        if f == s == r == 0:
            break
    late = normalise_after_matmul(out) if late_normalise else 0
    copies = duplicate_shared_transposes(out)
    removed += remove_dead_nodes(out)
    onnx.checker.check_model(out)
    return out, OptimizeReport(folded, split, removed, before, len(out.graph.node), late, copies)


def optimize_fp16(model: Any) -> tuple[Any, OptimizeReport]:
    """The FP16 subset of :func:`optimize_model` (see the module docstring for why); ``model`` is not modified."""
    onnx = _onnx()
    out = onnx.ModelProto()
    out.CopyFrom(model)
    before = len(out.graph.node)
    folded = split = removed = 0
    while True:
        f, s = fold_static_channels(out), split_chunked_convs(out)
        r = remove_dead_nodes(out)
        folded, split, removed = folded + f, split + s, removed + r
        if f == s == r == 0:
            break
    onnx.checker.check_model(out)
    return out, OptimizeReport(folded, split, removed, before, len(out.graph.node))


def _feeds(session: Any, h: int, w: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in session.get_inputs():
        if inp.type == "tensor(uint8)":
            feeds[inp.name] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        elif inp.name == "norm_state":
            feeds[inp.name] = np.zeros(3, np.float32)
        else:
            feeds[inp.name] = rng.random((1, 1, h, w), dtype=np.float32)
    return feeds


def verify_equal(
    original: Any, optimized: Any, sizes: Sequence[Size] = (Size(64, 80), Size(97, 131)), atol: float = VERIFY_ATOL
) -> float:
    """Run both models (ModelProto or path) in ONNX Runtime CPU on random inputs; return the max |diff|.

    Float outputs must agree within ``atol``, uint8 outputs within 1 level; raises
    ``refusion.runtime.errors.EngineError`` otherwise.
    """
    from refusion.runtime._deps import require
    from refusion.runtime.errors import EngineError

    ort = require("onnxruntime", "verifying an optimised ONNX graph")

    def session(m: Any) -> Any:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        src = m if isinstance(m, (str, bytes)) else m.SerializeToString()
        return ort.InferenceSession(src if not isinstance(m, str) else str(m), so, providers=["CPUExecutionProvider"])

    s0, s1 = session(original), session(optimized)
    worst = 0.0
    for k, (h, w) in enumerate(sizes):
        feeds = _feeds(s0, h, w, k)
        for (name, x), y in zip(((o.name, v) for o, v in zip(s0.get_outputs(), s0.run(None, feeds))), s1.run(None, feeds)):
            diff = float(np.abs(x.astype(np.float64) - y.astype(np.float64)).max())
            limit = 1.0 if x.dtype == np.uint8 else atol
            if not np.isfinite(diff) or diff > limit:
                raise EngineError(f"optimised graph differs from the original: output {name!r} at {h}x{w} by {diff:.3g} (limit {limit:g})")
            if x.dtype != np.uint8:
                worst = max(worst, diff)
    return worst
