"""The precision structure of an ONNX graph *as TensorRT parsed it* (any TensorRT flavour, no GPU).

The FP16 lint of ``export/fp16.py`` checks the ONNX file; this module checks what
TensorRT's own ONNX parser made of it, in the strongly typed network it builds from:

- every REDUCE layer whose reduced axes include a dynamic (H, W) or long (> 4096)
  dimension takes a float32 input (the float32 islands around the q/k L2
  normalisations and the output min/max survived the parser);
- in an FP16 graph every convolution takes a half input; in an FP32 graph none does;
- the colour graph takes and returns uint8 frames (``a``, ``b`` -> ``fused``) and a
  float32 ``norm_state``; the core graph is float32 in and out.

Nothing here constructs a GPU object: parsing needs only ``Builder``,
``create_network`` and ``OnnxParser``, which work on a machine without a GPU (checked
with tensorrt_rtx 1.7).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refusion.runtime.errors import EngineError

#: Every TensorRT name this module uses (checked against the installed bindings by the tests).
TRT_NETWORK_NAMES: tuple[str, ...] = (
    "Logger",
    "WARNING",
    "Builder",
    "create_network",
    "NetworkDefinitionCreationFlag",
    "STRONGLY_TYPED",
    "OnnxParser",
    "parse",
    "num_errors",
    "get_error",
    "num_inputs",
    "get_input",
    "num_outputs",
    "get_output",
    "num_layers",
    "get_layer",
    "LayerType",
    "CONVOLUTION",
    "REDUCE",
    "IReduceLayer",
    "axes",
    "op",
    "dtype",
    "shape",
    "type",
    "name",
)

#: A reduced dimension longer than this (when static) counts as spatial (as in export/fp16.py).
MAX_NON_SPATIAL = 4096

#: Expected I/O element types per graph (TensorRT DataType member names).
GRAPH_IO_TYPES: dict[str, dict[str, str]] = {
    "core": {"a": "FLOAT", "b": "FLOAT", "fused": "FLOAT"},
    "colour": {"a": "UINT8", "b": "UINT8", "norm_state": "FLOAT", "fused": "UINT8", "norm_state_out": "FLOAT"},
}


@dataclass(frozen=True)
class ParsedReduce:
    """One REDUCE layer of the parsed network."""

    name: str
    op: str  # e.g. "SUM", "MAX"
    input_dtype: str  # e.g. "FLOAT", "HALF"
    input_shape: tuple[int, ...]  # -1 for dynamic dimensions
    axes: tuple[int, ...]
    spatial: bool  # a reduced axis is dynamic or longer than MAX_NON_SPATIAL


@dataclass
class NetworkReport:
    """Layer counts and the precision-relevant facts of one parsed network."""

    layers: int = 0
    by_type: Counter = field(default_factory=Counter)  # LayerType name -> count
    by_output_dtype: Counter = field(default_factory=Counter)  # DataType name -> number of layer outputs
    conv_input_dtypes: Counter = field(default_factory=Counter)  # DataType name -> convolutions
    reductions: list[ParsedReduce] = field(default_factory=list)
    io_types: dict[str, str] = field(default_factory=dict)  # network input/output name -> DataType name

    def summary(self) -> dict[str, Any]:
        """JSON-ready counts (for logs and the side-car)."""
        return {
            "layers": self.layers,
            "by_type": dict(self.by_type.most_common()),
            "outputs_by_dtype": dict(self.by_output_dtype.most_common()),
            "convolutions_by_input_dtype": dict(self.conv_input_dtypes),
            "spatial_reductions": sum(r.spatial for r in self.reductions),
            "spatial_reductions_float32": sum(r.spatial and r.input_dtype == "FLOAT" for r in self.reductions),
        }

    def describe(self) -> str:
        """One line: layers, main types, dtypes."""
        top = ", ".join(f"{n} {k}" for k, n in self.by_type.most_common(6))
        dts = ", ".join(f"{k} {n}" for k, n in self.by_output_dtype.most_common())
        return f"{self.layers} layers ({top}, ...); layer outputs by type: {dts}"


def _enum_name(value: Any) -> str:
    return str(getattr(value, "name", value)).split(".")[-1]


def network_report(network: Any, trt: Any) -> NetworkReport:
    """Walk a parsed ``INetworkDefinition`` of module ``trt`` (tensorrt or tensorrt_rtx)."""
    rep = NetworkReport(layers=int(network.num_layers))
    for i in range(network.num_inputs):
        t = network.get_input(i)
        rep.io_types[t.name] = _enum_name(t.dtype)
    for i in range(network.num_outputs):
        t = network.get_output(i)
        rep.io_types[t.name] = _enum_name(t.dtype)
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        kind = _enum_name(layer.type)
        rep.by_type[kind] += 1
        for j in range(layer.num_outputs):
            rep.by_output_dtype[_enum_name(layer.get_output(j).dtype)] += 1
        if layer.type == trt.LayerType.CONVOLUTION:
            rep.conv_input_dtypes[_enum_name(layer.get_input(0).dtype)] += 1
        elif layer.type == trt.LayerType.REDUCE:
            layer.__class__ = trt.IReduceLayer  # the bindings hand out the base class; this exposes .axes
            x = layer.get_input(0)
            shape = tuple(int(d) for d in x.shape)
            axes = tuple(a for a in range(len(shape)) if int(layer.axes) >> a & 1)
            spatial = any(shape[a] < 0 or shape[a] > MAX_NON_SPATIAL for a in axes)
            rep.reductions.append(
                ParsedReduce(layer.name, _enum_name(layer.op), _enum_name(x.dtype), shape, axes, spatial)
            )
    return rep


def check_network(report: NetworkReport, graph: str, precision: str) -> list[str]:
    """Problems of a parsed network for ``graph`` ("core"/"colour") at ``precision`` ("fp32"/"fp16"); [] = fine."""
    problems: list[str] = []
    for name, want in GRAPH_IO_TYPES[graph].items():
        have = report.io_types.get(name, "missing")
        if have != want:
            problems.append(f"network I/O tensor {name!r} is {have}, expected {want}")
    convs = sum(report.conv_input_dtypes.values())
    if convs == 0:
        problems.append("the parsed network has no convolution")
    elif precision == "fp16" and report.conv_input_dtypes.get("HALF", 0) != convs:
        problems.append(
            f"{convs - report.conv_input_dtypes.get('HALF', 0)} of {convs} convolutions are not half "
            f"({dict(report.conv_input_dtypes)}): the FP16 interior did not survive the parser"
        )
    elif precision == "fp32" and report.conv_input_dtypes.get("HALF", 0):
        problems.append(f"an FP32 graph has half convolutions ({dict(report.conv_input_dtypes)})")
    spatial = [r for r in report.reductions if r.spatial]
    if not spatial:
        problems.append("no reduction over H*W found: not a refusion graph, or the parser rewrote them")
    for r in spatial:
        if r.input_dtype != "FLOAT":
            problems.append(
                f"REDUCE layer {r.name!r} ({r.op} over axes {list(r.axes)} of {list(r.input_shape)}) takes "
                f"{r.input_dtype}: reductions over H*W must run in float32 (a float16 sum of squares overflows above "
                "65504, float16 min/max round the normalisation bounds); it needs a float32 island"
            )
    return problems


def parse_onnx(trt: Any, onnx_path: Path | str, logger: Any = None) -> tuple[Any, Any, Any]:
    """Parse ``onnx_path`` into a strongly typed network: (builder, network, parser), kept together.

    The parser and builder must outlive the network, so all three are returned.
    Raises EngineError with the parser's first errors when parsing fails.
    """
    path = Path(onnx_path)
    logger = logger or trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(path.read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineError(f"TensorRT cannot parse {path.name}: " + "; ".join(errors[:5]))
    return builder, network, parser
