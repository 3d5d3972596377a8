"""Model card round trip and the plan side-car check (no torch, no TensorRT)."""
from __future__ import annotations

import json

import pytest

from refusion.runtime.card import (
    CARD_KEY,
    GRAPH_KEY,
    PRECISION_KEY,
    ModelCard,
    Provenance,
    onnx_metadata,
    read_onnx_metadata,
)
from refusion.runtime.errors import CheckpointError, EngineError
from refusion.runtime.sidecar import check_sidecar, read_sidecar, sidecar_path, write_sidecar

H100 = ("NVIDIA H100 80GB HBM3", (9, 0))


def _card() -> ModelCard:
    return ModelCard(
        task="ivif",
        sources=("ir", "vis"),
        model_config={"dim": 16, "heads": 8},
        provenance=Provenance(checkpoint_sha256="ab" * 32, kind="official", versions={"torch": "2.13.0"}),
    )


def _sidecar(**over) -> dict:
    d = {
        "model_card": _card().to_dict(),
        "graph": "colour",
        "precision": "fp16",
        "tensorrt_version": "10.13.3.9",
        "gpu_name": H100[0],
        "compute_capability": [9, 0],
        "profile": {"min": [64, 64], "opt": [480, 640], "max": [1080, 1920]},
        "onnx_file": "ivif.colour.fp16.onnx",
        "onnx_sha256": "cd" * 32,
        "version_compatible": False,
        "hardware_compatibility": "none",
        "rebuild_command": "rfexport engine ivif.colour.fp16.onnx --out engines",
    }
    d.update(over)
    return d


def test_card_round_trip_and_metadata():
    card = _card()
    again = ModelCard.from_json(card.to_json())
    assert again == card
    meta = onnx_metadata(card, "colour", "fp16")
    parsed = read_onnx_metadata(meta)
    assert parsed.card == card and parsed.graph == "colour" and parsed.precision == "fp16"
    assert set(meta) == {CARD_KEY, GRAPH_KEY, PRECISION_KEY}


def test_card_errors():
    with pytest.raises(CheckpointError, match="no refusion model card"):
        read_onnx_metadata({}, "x.onnx")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        ModelCard.from_json("{nope")
    with pytest.raises(CheckpointError, match="sources"):
        ModelCard.from_dict({"task": "ivif", "sources": ["ir"]})
    with pytest.raises(CheckpointError, match="newer"):
        ModelCard.from_dict({"sources": ["a", "b"], "card_version": 99})


def test_sidecar_round_trip(tmp_path):
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"plan")
    assert sidecar_path(plan).name == "m.plan.json"
    write_sidecar(plan, _sidecar())
    data = read_sidecar(plan)
    assert data["tensorrt_version"] == "10.13.3.9"
    check_sidecar(data, "10.13.3.9", *H100)


def test_sidecar_missing_or_bad(tmp_path):
    plan = tmp_path / "m.plan"
    with pytest.raises(EngineError, match="no side-car.*rfexport engine"):
        read_sidecar(plan)
    sidecar_path(plan).write_text("{]")
    with pytest.raises(EngineError, match="unreadable"):
        read_sidecar(plan)
    sidecar_path(plan).write_text(json.dumps({"format": "refusion-plan-sidecar", "format_version": 1}))
    with pytest.raises(EngineError, match="lacks"):
        read_sidecar(plan)


def test_other_tensorrt_version_rejected():
    with pytest.raises(EngineError, match=r"TensorRT 10\.13\.3\.9 but TensorRT 11\.4\.0\.106.*rfexport engine"):
        check_sidecar(_sidecar(), "11.4.0.106", *H100)


def test_version_compatible_rules():
    vc = _sidecar(version_compatible=True)
    check_sidecar(vc, "10.16.1.11", *H100)  # newer, same major: fine
    with pytest.raises(EngineError, match="version-compatible within TensorRT 10"):
        check_sidecar(vc, "11.4.0.106", *H100)
    with pytest.raises(EngineError, match="version-compatible within"):
        check_sidecar(vc, "10.3.0.26", *H100)  # older runtime
    with pytest.raises(EngineError, match="lean TensorRT runtime"):
        check_sidecar(_sidecar(), "10.13.3.9", *H100, lean=True)
    check_sidecar(vc, "10.13.3.9", *H100, lean=True)


def test_other_gpu_rejected():
    with pytest.raises(EngineError, match=r"compute capability 9\.0.*RTX 4090 \(8\.9\).*rfexport engine"):
        check_sidecar(_sidecar(), "10.13.3.9", "NVIDIA GeForce RTX 4090", (8, 9))
    hw = _sidecar(hardware_compatibility="ampere_plus", compute_capability=[8, 6])
    check_sidecar(hw, "10.13.3.9", "NVIDIA GeForce RTX 4090", (8, 9))
    with pytest.raises(EngineError, match="Ampere and later"):
        check_sidecar(hw, "10.13.3.9", "Tesla T4", (7, 5))
    warnings: list[str] = []
    check_sidecar(_sidecar(), "10.13.3.9", "NVIDIA H100 PCIe", (9, 0), warn=warnings.append)
    assert warnings and "same compute capability" in warnings[0]


def _rtx(**over) -> dict:
    d = _sidecar(flavour="tensorrt_rtx", tensorrt_version="1.7.1.116", gpu_name="", compute_capability=[],
                 compute_capabilities="default", rebuild_command="rfexport engine ivif.colour.fp16.onnx --trt-flavour tensorrt_rtx")
    d.update(over)
    return d


def test_tensorrt_rtx_plans():
    rtx4090, h100 = ("NVIDIA GeForce RTX 4090", (8, 9)), ("NVIDIA H100 80GB HBM3", (9, 0))
    check_sidecar(_rtx(), "1.7.1.116", *rtx4090, flavour="tensorrt_rtx")
    check_sidecar(_rtx(), "1.7.1.116", "RTX 5090", (12, 0), flavour="tensorrt_rtx")
    with pytest.raises(EngineError, match=r"compute capability 8.0, 8.6, 8.9, 12.0 and later.*9.0.*--compute-capability 9.0"):
        check_sidecar(_rtx(), "1.7.1.116", *h100, flavour="tensorrt_rtx")
    with pytest.raises(EngineError, match=r"built with tensorrt_rtx 1.7.1.116 but tensorrt_rtx 1.8.0.1 is installed.*tensorrt-rtx-cu13==1.7.1.116"):
        check_sidecar(_rtx(), "1.8.0.1", *rtx4090, flavour="tensorrt_rtx")
    with pytest.raises(EngineError, match=r"built with tensorrt_rtx 1.7.1.116, but this runtime uses tensorrt 10.13.3.9.*rebuild"):
        check_sidecar(_rtx(), "10.13.3.9", *rtx4090, flavour="tensorrt")
    with pytest.raises(EngineError, match=r"built with tensorrt 10.13.3.9, but this runtime uses tensorrt_rtx"):
        check_sidecar(_sidecar(), "1.7.1.116", *rtx4090, flavour="tensorrt_rtx")
    targeted = _rtx(compute_capabilities=["8.6"])
    check_sidecar(targeted, "1.7.1.116", "RTX 3090", (8, 6), flavour="tensorrt_rtx")
    with pytest.raises(EngineError, match="compute capability 8.6, but this GPU"):
        check_sidecar(targeted, "1.7.1.116", *rtx4090, flavour="tensorrt_rtx")


def test_format_1_side_car_is_full_tensorrt(tmp_path):
    plan = tmp_path / "e.plan"
    plan.write_bytes(b"\0")
    write_sidecar(plan, _sidecar())
    data = json.loads(sidecar_path(plan).read_text())
    data["format_version"] = 1
    sidecar_path(plan).write_text(json.dumps(data))
    side = read_sidecar(plan)
    check_sidecar(side, "10.13.3.9", *H100)  # no "flavour" key: a full-TensorRT plan
