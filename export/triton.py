"""A Triton Inference Server model repository for one exported graph (ONNX or TensorRT plan).

Layout (Triton's model_repository.md: the folder name equals ``name``)::

    DIR/<name>/config.pbtxt
    DIR/<name>/1/model.onnx      (platform onnxruntime_onnx)
    DIR/<name>/1/model.plan      (platform tensorrt_plan; its side-car is copied beside it)

``max_batch_size: 0``: Triton does not batch; dims are the full tensor shapes with -1
for the dynamic H, W. The colour graph's ``norm_state`` carries the EMA
normalisation between frames; Triton is stateless, so the client feeds
``norm_state_out`` of one request into ``norm_state`` of the next. A plan runs only
on the TensorRT version and GPU that built it (see its side-car): build it with the
TensorRT of the Triton container.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from refusion.runtime.errors import EngineError

# name -> (Triton data type, dims) per graph; -1 = dynamic
_IO = {
    "core": (
        [("a", "TYPE_FP32", [-1, 1, -1, -1]), ("b", "TYPE_FP32", [-1, 1, -1, -1])],
        [("fused", "TYPE_FP32", [-1, 1, -1, -1])],
    ),
    "colour": (
        [("a", "TYPE_UINT8", [-1, -1, 3]), ("b", "TYPE_UINT8", [-1, -1, 3]), ("norm_state", "TYPE_FP32", [3])],
        [("fused", "TYPE_UINT8", [-1, -1, 3]), ("norm_state_out", "TYPE_FP32", [3])],
    ),
}


def _tensor_block(entries: list[tuple[str, str, list[int]]]) -> str:
    items = [f'  {{\n    name: "{n}"\n    data_type: {t}\n    dims: [ {", ".join(str(d) for d in dims)} ]\n  }}' for n, t, dims in entries]
    return ",\n".join(items)


def _pbtxt_string(s: str) -> str:
    return json.dumps(s)  # JSON string escaping is valid protobuf text-format escaping for these strings


def config_pbtxt(name: str, platform: str, graph: str, card_json: str = "", plan_batch_one: bool = False) -> str:
    """The config.pbtxt text for ``graph`` ("core"/"colour") on ``platform``."""
    inputs, outputs = _IO[graph]
    if plan_batch_one and graph == "core":  # the engine's profile has N = 1
        inputs = [(n, t, [1, *d[1:]]) for n, t, d in inputs]
        outputs = [(n, t, [1, *d[1:]]) for n, t, d in outputs]
    kind = "KIND_GPU" if platform == "tensorrt_plan" else "KIND_AUTO"
    text = (
        f'name: "{name}"\n'
        f'platform: "{platform}"\n'
        "max_batch_size: 0\n"
        f"input [\n{_tensor_block(inputs)}\n]\n"
        f"output [\n{_tensor_block(outputs)}\n]\n"
        f"instance_group [ {{ count: 1 kind: {kind} }} ]\n"
    )
    if card_json:
        text += f'parameters {{ key: "refusion.model_card" value {{ string_value: {_pbtxt_string(card_json)} }} }}\n'
    return text


def write_triton_repo(
    repo: str | os.PathLike,
    artifact: str | os.PathLike,
    graph: str,
    card_json: str = "",
    name: str | None = None,
    version: int = 1,
    overwrite: bool = False,
) -> Path:
    """Add ``artifact`` (.onnx or .plan) as model ``name`` to the repository ``repo``; returns the model folder."""
    src = Path(artifact)
    if src.suffix == ".plan":
        platform, target = "tensorrt_plan", "model.plan"
    elif src.suffix == ".onnx":
        platform, target = "onnxruntime_onnx", "model.onnx"
    else:
        raise EngineError(f"{src}: a Triton model needs a .onnx or .plan file")
    if graph not in _IO:
        raise EngineError(f"unknown graph {graph!r}")
    if name is None:
        stem = re.sub(r"[^A-Za-z0-9_]+", "_", src.name[: -len(src.suffix)]).strip("_")
        name = f"{stem}_{'trt' if platform == 'tensorrt_plan' else 'onnx'}"
    folder = Path(repo) / name
    config = folder / "config.pbtxt"
    dest = folder / str(version) / target
    if not overwrite and (config.exists() or dest.exists()):
        raise EngineError(f"Triton model {folder} already exists; pass --overwrite to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    side = src.with_name(src.name + ".json")
    if platform == "tensorrt_plan" and side.is_file():
        shutil.copyfile(side, dest.with_name(dest.name + ".json"))
    config.write_text(config_pbtxt(name, platform, graph, card_json, plan_batch_one=platform == "tensorrt_plan"))
    return folder


def add_to_repo(
    artifact: str | os.PathLike, repo: str | os.PathLike, name: str | None = None, overwrite: bool = False
) -> Path:
    """Add an rfexport ``.onnx`` (graph and card from its metadata) or ``.plan`` (from its side-car) to ``repo``."""
    src = Path(artifact)
    if src.suffix == ".plan":
        from refusion.runtime.sidecar import read_sidecar

        side = read_sidecar(src)
        graph, card = str(side["graph"]), json.dumps(side.get("model_card") or {}, sort_keys=True)
    elif src.suffix == ".onnx":
        from .tensorrt_build import _parse_onnx_io

        graph, _precision, card_dict = _parse_onnx_io(src)
        card = json.dumps(card_dict, sort_keys=True)
    else:
        raise EngineError(f"{src}: a Triton model needs an rfexport .onnx or .plan file")
    return write_triton_repo(repo, src, graph, card, name=name, overwrite=overwrite)
