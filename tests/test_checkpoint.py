"""Model files: our format round trip, the authors' key mapping, and clear errors for bad files."""
from __future__ import annotations

import pytest
import torch

from refusion.runtime.errors import CheckpointError
from refusion.train.checkpoint import (
    author_key_to_ours,
    load_checkpoint,
    load_fusion_model,
    save_checkpoint,
)
from refusion.train.networks import FusionConfig, FusionNet


def _ours(tmp_path, task="ivif"):
    net = FusionNet()
    return net, save_checkpoint(
        tmp_path / "m.pt", {"task": task, "model_config": FusionConfig().to_dict(), "fusion": net.state_dict()}
    )


def test_round_trip(tmp_path):
    net, path = _ours(tmp_path)
    loaded = load_fusion_model(path)
    assert loaded.kind == "refusion" and loaded.task == "ivif"
    for k, v in net.state_dict().items():
        torch.testing.assert_close(loaded.net.state_dict()[k], v)
    assert load_checkpoint(path)["version"] == 1
    assert not list(tmp_path.glob(".*.tmp")), "no temp files left behind"
    with pytest.raises(CheckpointError, match="trained for task 'ivif'"):
        load_fusion_model(path, task="mif")


def test_author_keys_cover_our_model(official):
    keys = (official / "state_dict_keys.txt").read_text().split("\n")
    names = {author_key_to_ours(line.split()[0]) for line in keys if line.strip()}
    assert names == set(FusionNet().state_dict())
    assert len([k for k in keys if k.strip()]) == 140


def test_truncated_file(tmp_path):
    _, path = _ours(tmp_path)
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_fusion_model(tmp_path / "cut.pt")


def test_text_file_and_missing(tmp_path):
    (tmp_path / "notes.txt").write_text("hello, this is not a model\n")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_fusion_model(tmp_path / "notes.txt")
    with pytest.raises(CheckpointError, match="not found"):
        load_fusion_model(tmp_path / "nope.pt")


def test_non_checkpoint_files_are_named_for_what_they_are(tmp_path):
    """Bytes that are neither torch's zip nor a pickle are not blamed on 'arbitrary Python objects'."""
    (tmp_path / "junk.pt").write_bytes(b"notamodel")
    with pytest.raises(CheckpointError, match="neither a zip archive nor a pickle"):
        load_fusion_model(tmp_path / "junk.pt")
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07\x12\x07pytorch")
    with pytest.raises(CheckpointError, match="by its name an ONNX model; give the checkpoint"):
        load_fusion_model(tmp_path / "model.onnx")


def _author_like() -> dict:
    sd = {}
    for k, v in FusionNet().state_dict().items():
        sd[k.replace("afm.temperature_a", "FM.temperature1")] = v
    return sd


def test_wrong_keys(official, tmp_path):
    sd = torch.load(official / "ReFusion_IVIF.pth", map_location="cpu", weights_only=True)
    sd.pop("FM.project_E.weight")
    sd.pop("FM.project_E.conv.weight")
    sd["FM.extra.weight"] = torch.zeros(3)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as err:
        load_fusion_model(tmp_path / "bad.pth")
    msg = str(err.value)
    assert "missing tensors: afm.gate.weight" in msg and "unexpected tensors: FM.extra.weight" in msg


def test_wrong_shapes(official, tmp_path):
    sd = torch.load(official / "ReFusion_IVIF.pth", map_location="cpu", weights_only=True)
    sd["project_in_1.weight"] = torch.zeros(8, 1, 3, 3)
    sd["project_in_1.conv.weight"] = torch.zeros(8, 1, 3, 3)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"wrong shapes: embed_a.weight \(8, 1, 3, 3\)"):
        load_fusion_model(tmp_path / "bad.pth")


def test_unrelated_state_dict_and_pickled_code(tmp_path):
    torch.save({"layer.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="neither a refusion checkpoint"):
        load_fusion_model(tmp_path / "other.pt")
    torch.save({"fn": print}, tmp_path / "code.pt")
    with pytest.raises(CheckpointError, match="refusing"):
        load_fusion_model(tmp_path / "code.pt")


def test_checkpoint_mode_follows_the_umask(tmp_path):
    import os

    old = os.umask(0o027)
    try:
        path = save_checkpoint(tmp_path / "last.pt", {"fusion": FusionNet().state_dict()})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640  # not mkstemp's 0600
    assert not list(tmp_path.glob(".*.tmp"))
