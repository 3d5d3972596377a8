"""rfexport ONNX: core and colour graphs, FP32 and FP16, parity with PyTorch, metadata, refusals."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from refusion.export.fp16 import lint_fp16  # noqa: E402
from refusion.export.onnx_export import (  # noqa: E402
    ExportCheckError,
    ExportConfig,
    check_core,
    export_model,
    level_stats,
    ort_session,
    run_colour,
    run_core,
)
from refusion.runtime.card import read_onnx_metadata  # noqa: E402
from refusion.runtime.errors import CheckpointError, EngineError  # noqa: E402
from refusion.runtime.imageio import read_image  # noqa: E402
from refusion.runtime.progress import CallbackProgress  # noqa: E402
from refusion.train.checkpoint import load_fusion_model, save_checkpoint  # noqa: E402
from refusion.train.fuse import fuse_pair, run_fusion  # noqa: E402
from refusion.train.networks import FusionNet  # noqa: E402

SIZES = ((48, 64), (97, 131))


@pytest.fixture(scope="module")
def ivif_pair(official: Path):
    case = official / "test_cases" / "IVIF"
    return read_image(case / "infrared" / "00710N.png"), read_image(case / "visible" / "00710N.png")


@pytest.fixture(scope="module")
def ivif_net(official: Path):
    return load_fusion_model(official / "ReFusion_IVIF.pth", "ivif").net


@pytest.fixture(scope="module")
def exported(official: Path, tmp_path_factory):
    """The authors' IVIF model exported once: all four graphs, checks at small sizes on a real pair."""
    out = tmp_path_factory.mktemp("onnx")
    case = official / "test_cases" / "IVIF"
    cfg = ExportConfig(
        model=official / "ReFusion_IVIF.pth",
        task="ivif",
        out_dir=out,
        fp16=True,
        check_sizes=SIZES,
        fp16_check_sizes=((72, 96),),
        check_images=(case / "infrared" / "00710N.png", case / "visible" / "00710N.png"),
    )
    log: list[str] = []
    result = export_model(cfg, CallbackProgress(log.append))
    return result, log


def test_files_names_and_checks(exported):
    result, log = exported
    names = sorted(p.name for p in result.files.values())
    assert names == [
        "ReFusion_IVIF.colour.fp16.onnx",
        "ReFusion_IVIF.colour.onnx",
        "ReFusion_IVIF.fp16.onnx",
        "ReFusion_IVIF.onnx",
    ]
    assert any("core fp32 vs torch at 97x131" in line for line in log)
    assert any("colour fp16 vs fp32" in line for line in log)
    assert not list(next(iter(result.files.values())).parent.glob(".*.tmp"))


def test_metadata_and_io(exported):
    result, _ = exported
    for key, path in result.files.items():
        graph, precision = key.split(".")
        sess = ort_session(path)
        meta = read_onnx_metadata(sess.get_modelmeta().custom_metadata_map, path.name)
        assert (meta.graph, meta.precision) == (graph, precision)
        assert meta.card.task == "ivif" and meta.card.sources == ("ir", "vis")
        assert meta.card.provenance.kind == "official" and len(meta.card.provenance.checkpoint_sha256) == 64
        model = onnx.load(str(path))
        assert model.opset_import[0].version >= 17
        ins = {i.name: i.type.tensor_type for i in model.graph.input}
        if graph == "core":
            assert [i.name for i in model.graph.input] == ["a", "b"]
            assert [o.name for o in model.graph.output] == ["fused"]
            assert ins["a"].elem_type == onnx.TensorProto.FLOAT
            assert ins["a"].shape.dim[2].dim_param and ins["a"].shape.dim[3].dim_param  # dynamic H, W
        else:
            assert [i.name for i in model.graph.input] == ["a", "b", "norm_state"]
            assert [o.name for o in model.graph.output] == ["fused", "norm_state_out"]
            assert ins["a"].elem_type == onnx.TensorProto.UINT8


@pytest.mark.parametrize("hw", [(33, 47), (97, 131), (64, 64)])
def test_core_parity_odd_sizes(exported, ivif_pair, ivif_net, hw):
    import cv2

    result, _ = exported
    h, w = hw
    a, b = (cv2.resize(x, (w, h), interpolation=cv2.INTER_AREA) for x in ivif_pair)
    from refusion.runtime.colour import luma_bgr

    ya, yb = luma_bgr(a), luma_bgr(b)
    ref = run_fusion(ivif_net, ya, yb)
    got = run_core(ort_session(result.files["core.fp32"]), ya, yb)
    assert got.shape == (h, w)
    assert np.abs(got - ref).max() < 1e-4


@pytest.mark.parametrize("hw", [(33, 47), (97, 131)])
def test_colour_parity_with_fuse_pair(exported, ivif_pair, ivif_net, hw):
    import cv2

    result, _ = exported
    h, w = hw
    a, b = (cv2.resize(x, (w, h), interpolation=cv2.INTER_AREA) for x in ivif_pair)
    ref = fuse_pair(ivif_net, a, b, normalisation="minmax").bgr
    got, state = run_colour(ort_session(result.files["colour.fp32"]), a, b)
    worst, within1 = level_stats(got, ref)
    assert got.dtype == np.uint8 and got.shape == (h, w, 3)
    assert worst <= 2 and within1 >= 0.999
    assert state[2] == 0.0 and state[0] < state[1]


def test_colour_grey_source_keeps_colour(exported, ivif_net):
    """A grey source (3 equal channels) gets chroma weight 0: chroma comes from the colour source."""
    result, _ = exported
    rng = np.random.default_rng(1)
    grey = np.repeat(rng.integers(0, 255, (40, 56, 1), dtype=np.uint8), 3, axis=2)
    colour = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
    ref = fuse_pair(ivif_net, grey, colour).bgr
    got, _ = run_colour(ort_session(result.files["colour.fp32"]), grey, colour)
    assert level_stats(got, ref)[0] <= 2


def test_fp16_graphs_pass_lint(exported):
    result, _ = exported
    for key in ("core.fp16", "colour.fp16"):
        assert lint_fp16(onnx.load(str(result.files[key])), key.split(".")[0]) == []
    # and the FP32 graph is recognised as not FP16
    assert any("not float16" in p for p in lint_fp16(onnx.load(str(result.files["core.fp32"])), "core"))


def test_parity_check_fails_loudly(exported, ivif_pair):
    """A graph that does not match the model is refused with ExportCheckError."""
    result, _ = exported
    torch.manual_seed(3)
    other = FusionNet().eval()
    with pytest.raises(ExportCheckError, match="differs from PyTorch"):
        check_core(result.files["core.fp32"], other, ivif_pair, ((40, 52),))


def test_existing_outputs_not_overwritten(exported, official):
    result, _ = exported
    out = result.files["core.fp32"].parent
    cfg = ExportConfig(model=official / "ReFusion_IVIF.pth", task="ivif", out_dir=out)
    with pytest.raises(EngineError, match="--overwrite"):
        export_model(cfg)


def test_our_checkpoint_core_only(tmp_path):
    torch.manual_seed(0)
    net = FusionNet().eval()
    ckpt = save_checkpoint(tmp_path / "run.pt", {"task": "mfif", "model_config": net.config.to_dict(), "fusion": net.state_dict()})
    cfg = ExportConfig(model=ckpt, graphs=("core",), check_sizes=((24, 40),))
    result = export_model(cfg)
    assert set(result.files) == {"core.fp32"}
    assert result.files["core.fp32"] == tmp_path / "run.onnx"
    meta = read_onnx_metadata(ort_session(result.files["core.fp32"]).get_modelmeta().custom_metadata_map)
    assert meta.card.task == "mfif" and meta.card.sources == ("near", "far")
    assert meta.card.provenance.kind == "refusion"


def test_rejects_bad_inputs(tmp_path, official):
    bad = tmp_path / "notes.pt"
    bad.write_text("not a checkpoint")
    with pytest.raises(CheckpointError):
        export_model(ExportConfig(model=bad))
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="rfexport engine"):
        export_model(ExportConfig(model=onnx_file))
    with pytest.raises(CheckpointError, match="--task"):
        export_model(ExportConfig(model=official / "ReFusion_IVIF.pth", out_dir=tmp_path))
    with pytest.raises(CheckpointError, match="unknown task"):
        export_model(ExportConfig(model=official / "ReFusion_IVIF.pth", task="xyz", out_dir=tmp_path))
