"""rfbench quality: pairing, evaluation, ONNX/torch models, report files, CLI errors."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from refusion.benchmarks import quality as Q
from refusion.benchmarks.paper_numbers import PAPER_NUMBERS, add_paper_row, guess_dataset, paper_row
from refusion.benchmarks.quality_cli import quality
from refusion.benchmarks.quality_report import report_to_markdown
from refusion.runtime.errors import CheckpointError, DataError, SizeError
from refusion.runtime.progress import Progress


def _write_split(root: Path, roles=("ir", "vis"), n: int = 2, size=(40, 48), names=None) -> Path:
    rng = np.random.default_rng(0)
    h, w = size
    y, x = np.mgrid[0:h, 0:w]
    names = names or [f"{i:03d}" for i in range(n)]
    for i, name in enumerate(names):
        grey = (110 + 70 * np.sin(x / (4.0 + i)) * np.cos(y / 6.0)).astype(np.uint8)
        bgr = np.clip(rng.normal(120, 35, (h, w, 3)), 0, 255).astype(np.uint8)
        (root / roles[0]).mkdir(parents=True, exist_ok=True)
        (root / roles[1]).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / roles[0] / f"{name}.png"), grey)
        cv2.imwrite(str(root / roles[1] / f"{name}.png"), bgr)
    return root


# ----------------------------------------------------------------------------- pairing
def test_find_pairs_matches_by_name_in_natural_order(tmp_path):
    root = _write_split(tmp_path / "split", names=["img10", "img2", "img1"])
    pairs = Q.find_pairs(root, "ivif")
    assert [p.name for p in pairs] == ["img1", "img2", "img10"]
    assert pairs[0].path_a.parent.name == "ir" and pairs[0].path_b.parent.name == "vis"


def test_find_pairs_sorts_mixed_names(tmp_path):
    # names with and without digits (as in MEFB) must sort without comparing int with str
    root = _write_split(tmp_path / "split", size=(8, 8), names=["Candle", "Candle2", "10", "2", "a3b"])
    assert [p.name for p in Q.find_pairs(root, "ivif")] == ["2", "10", "a3b", "Candle", "Candle2"]


def test_unpaired_names_are_listed(tmp_path):
    root = _write_split(tmp_path / "split", n=2)
    cv2.imwrite(str(root / "ir" / "extra_ir.png"), np.zeros((8, 8), np.uint8))
    cv2.imwrite(str(root / "vis" / "extra_vis.png"), np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match="only in ir/: extra_ir; only in vis/: extra_vis"):
        Q.find_pairs(root, "ivif")


def test_missing_or_empty_folders(tmp_path):
    with pytest.raises(DataError, match="not found"):
        Q.find_pairs(tmp_path / "nope", "ivif")
    (tmp_path / "ir").mkdir()
    (tmp_path / "vis").mkdir()
    with pytest.raises(DataError, match="no images"):
        Q.find_pairs(tmp_path, "ivif")
    with pytest.raises(DataError, match="needs 'near' and 'far'"):
        Q.find_pairs(tmp_path, "mfif")


# ----------------------------------------------------------------------------- evaluation
def test_evaluate_baselines_report(tmp_path):
    root = _write_split(tmp_path / "split", n=3)
    cfg = Q.QualityConfig(task="ivif", data=root, baselines=("average", "gff"), limit=2,
                          save_images_to=tmp_path / "out" / "images")
    class Seen(Progress):
        def __init__(self) -> None:
            self.steps: list[tuple[int, int]] = []
            self.started, self.closed = None, False

        def start(self, total, done=0, label=""):
            self.started = (total, done)

        def step(self, info):
            self.steps.append((info["done"], info["total"]))

        def close(self):
            self.closed = True

    seen = Seen()
    report = Q.evaluate(cfg, seen)
    assert seen.steps[-1] == (4, 4) and seen.steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert seen.started == (4, 0) and seen.closed
    assert report["pairs"] == 2
    assert report["metrics"] == ["EN", "SD", "SF", "AG", "SCD", "SSIM", "QABF"]
    rows = {r["method"]: r for r in report["rows"]}
    assert set(rows) == {"average", "gff"}
    for row in rows.values():
        assert row["n"] == 2 and row["seconds_per_image"] >= 0
        assert all(np.isfinite(row["mean"][m]) and row["std"][m] >= 0 for m in report["metrics"])
    # gff keeps more detail than plain averaging
    assert rows["gff"]["mean"]["SF"] > rows["average"]["mean"]["SF"]
    assert sorted(p.name for p in (tmp_path / "out" / "images" / "gff").iterdir()) == ["000.png", "001.png"]

    json_path, md_path = Q.write_report(report, tmp_path / "out")
    assert json.loads(json_path.read_text())["rows"][0]["method"] == "average"
    md = md_path.read_text()
    assert "| method | EN | SD | SF | AG | SCD | SSIM | Q_AB/F | s/image |" in md
    with pytest.raises(DataError, match="--overwrite"):
        Q.write_report(report, tmp_path / "out")


def test_evaluate_mfif_metrics_subset(tmp_path):
    root = _write_split(tmp_path / "split", roles=("near", "far"), n=1, size=(128, 128))
    cfg = Q.QualityConfig(task="mfif", data=root, baselines=("laplacian",), metrics=("VIF", "QCB", "QNCIE", "MI"))
    report = Q.evaluate(cfg)
    assert set(report["rows"][0]["mean"]) == {"VIF", "QCB", "QNCIE", "MI"}


def test_too_small_for_a_metric_names_the_pair(tmp_path):
    root = _write_split(tmp_path / "split", n=1, size=(5, 5))
    with pytest.raises(SizeError, match="pair 000, average: .*SSIM window"):
        Q.evaluate(Q.QualityConfig(task="ivif", data=root, baselines=("average",)))


def test_size_mismatch_names_the_pair(tmp_path):
    root = _write_split(tmp_path / "split", n=1)
    cv2.imwrite(str(root / "vis" / "000.png"), np.zeros((30, 30, 3), np.uint8))
    cfg = Q.QualityConfig(task="ivif", data=root, baselines=("average",))
    with pytest.raises(SizeError, match="pair 000: sources differ in size"):
        Q.evaluate(cfg)


def test_bad_methods(tmp_path):
    root = _write_split(tmp_path / "split", n=1)
    with pytest.raises(DataError, match="nothing to evaluate"):
        Q.evaluate(Q.QualityConfig(task="ivif", data=root))
    with pytest.raises(CheckpointError, match="not found"):
        Q.evaluate(Q.QualityConfig(task="ivif", data=root, models=(tmp_path / "missing.pt",)))
    other = tmp_path / "model.bin"
    other.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown model type"):
        Q.evaluate(Q.QualityConfig(task="ivif", data=root, models=(other,)))
    with pytest.raises(DataError, match="unknown metric"):
        Q.evaluate(Q.QualityConfig(task="ivif", data=root, baselines=("average",), metrics=("FMI",)))
    with pytest.raises(DataError, match="unknown baseline"):
        Q.evaluate(Q.QualityConfig(task="ivif", data=root, baselines=("wavelet",)))


# ----------------------------------------------------------------------------- ONNX models
def _tiny_core_onnx(path: Path, input_names=("a", "b")) -> Path:
    """fused = sigmoid(0.5 a + 0.5 b - 0.25), (N, 1, H, W) dynamic."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    shape = ["N", 1, "H", "W"]
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in input_names]
    out = helper.make_tensor_value_info("fused", TensorProto.FLOAT, shape)
    half = helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])
    shift = helper.make_tensor("shift", TensorProto.FLOAT, [], [0.25])
    nodes = [
        helper.make_node("Add", list(input_names), ["s"]),
        helper.make_node("Mul", ["s", "half"], ["m"]),
        helper.make_node("Sub", ["m", "shift"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["fused"]),
    ]
    graph = helper.make_graph(nodes, "tiny", ins, [out], initializer=[half, shift])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_onnx_core_graph_is_min_max_normalised(tmp_path):
    root = _write_split(tmp_path / "split", n=1)
    model = _tiny_core_onnx(tmp_path / "tiny.onnx")
    meth = Q.model_method(model, "ivif")
    assert meth.kind == "onnx"
    from refusion.runtime.imageio import read_image
    from refusion.benchmarks.baselines import ycrcb01

    a, b = read_image(root / "ir" / "000.png"), read_image(root / "vis" / "000.png")
    grey, bgr = meth.fuse(a, b)
    ya, yb = ycrcb01(a)[..., 0], ycrcb01(b)[..., 0]
    raw = 1 / (1 + np.exp(-(0.5 * (ya + yb) - 0.25)))
    expected = (raw - raw.min()) / (raw.max() - raw.min()) * 255
    assert np.abs(grey.astype(float) - expected).max() <= 0.51
    assert grey.min() == 0 and grey.max() == 255 and bgr.shape == a.shape


def test_normalisation_none_keeps_the_raw_sigmoid_output(tmp_path):
    root = _write_split(tmp_path / "split", n=1)
    model = _tiny_core_onnx(tmp_path / "tiny.onnx")
    from refusion.runtime.imageio import read_image
    from refusion.benchmarks.baselines import ycrcb01

    a, b = read_image(root / "ir" / "000.png"), read_image(root / "vis" / "000.png")
    grey, _ = Q.model_method(model, "ivif", normalisation="none").fuse(a, b)
    ya, yb = ycrcb01(a)[..., 0], ycrcb01(b)[..., 0]
    raw = 1 / (1 + np.exp(-(0.5 * (ya + yb) - 0.25)))
    assert np.abs(grey.astype(float) - raw * 255).max() <= 0.51
    assert grey.min() > 0  # not stretched: sigmoid(-0.25) = 0.44 is the floor
    report = Q.evaluate(Q.QualityConfig(task="ivif", data=root, models=(model,), baselines=("average",),
                                        metrics=("SD",), normalisation="none"))
    stretched = Q.evaluate(Q.QualityConfig(task="ivif", data=root, models=(model,), metrics=("SD",)))
    assert report["normalisation"] == "none" and stretched["normalisation"] == "minmax"
    assert report["rows"][0]["mean"]["SD"] < stretched["rows"][0]["mean"]["SD"]
    assert "--norm none" in report_to_markdown(report)
    with pytest.raises(DataError, match="unknown normalisation"):
        Q.model_method(model, "ivif", normalisation="ema")
    res = CliRunner().invoke(quality, ["--task", "ivif", "--data", str(root), "--model", str(model), "--metrics", "SD",
                                       "--norm", "none", "--out", str(tmp_path / "out"), "--no-progress"])
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "out" / "quality_ivif.json").read_text())
    assert saved["normalisation"] == "none" and saved["rows"][0]["mean"]["SD"] == report["rows"][0]["mean"]["SD"]


def test_onnx_with_wrong_inputs_is_refused(tmp_path):
    model = _tiny_core_onnx(tmp_path / "wrong.onnx", input_names=("x", "y"))
    with pytest.raises(CheckpointError, match="inputs are"):
        Q.model_method(model, "ivif")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="cannot load ONNX"):
        Q.model_method(broken, "ivif")


def test_no_torch_for_onnx_and_baselines(tmp_path):
    root = _write_split(tmp_path / "split", n=1)
    model = _tiny_core_onnx(tmp_path / "tiny.onnx")
    code = textwrap.dedent(
        f"""
        import sys
        from refusion.benchmarks import quality as Q, quality_cli, baselines, paper_numbers
        from refusion.runtime import metrics  # the one metrics module since issue 11
        cfg = Q.QualityConfig(task="ivif", data={str(root)!r}, models=({str(model)!r},), baselines=("gff",))
        Q.evaluate(cfg)
        assert "torch" not in sys.modules, "torch was imported"
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ----------------------------------------------------------------------------- authors' checkpoint
def test_authors_checkpoint_on_one_real_pair(official, data_dir, tmp_path):
    pytest.importorskip("torch")
    cfg = Q.QualityConfig(
        task="mif", data=data_dir / "mif" / "Harvard" / "test", models=(official / "ReFusion_MIF.pth",),
        baselines=("average",), limit=1,
    )
    report = Q.evaluate(cfg)
    rows = {r["method"]: r for r in report["rows"]}
    assert rows["ReFusion_MIF"]["kind"] == "official"
    ours, avg = rows["ReFusion_MIF"]["mean"], rows["average"]["mean"]
    assert ours["SD"] > avg["SD"] and ours["SF"] > avg["SF"]


def test_onnx_colour_path_matches_torch_fuse_pair(official, data_dir):
    """compose_colour (used for ONNX models) repeats refusion.train.fuse.fuse_pair's colour step."""
    pytest.importorskip("torch")
    from refusion.benchmarks.baselines import compose_colour
    from refusion.runtime.imageio import read_image
    from refusion.train.checkpoint import load_fusion_model
    from refusion.train.fuse import fuse_pair, normalise_output

    split = data_dir / "mif" / "Harvard" / "test"
    name = Q.find_pairs(split, "mif")[0]
    a, b = read_image(name.path_a), read_image(name.path_b)
    out = fuse_pair(load_fusion_model(official / "ReFusion_MIF.pth").net, a, b)
    np.testing.assert_array_equal(compose_colour(normalise_output(out.raw), a, b), out.bgr)


# ----------------------------------------------------------------------------- paper numbers
def test_paper_rows():
    assert guess_dataset("/x/shared/data/ivif/MSRS/test") == "MSRS"
    assert guess_dataset("/x/elsewhere") is None
    row = paper_row("lytro")
    assert row["mean"]["QCB"] == 0.69 and row["kind"] == "paper"
    report = {"task": "ivif", "data": "d", "pairs": 1, "metrics": ["EN", "SSIM"], "rows": []}
    report = add_paper_row(add_paper_row(report, "MSRS"), "MSRS")
    assert len(report["rows"]) == 1
    assert "| ReFusion (paper) | 6.71 | 0.51 | - |" in Q.report_to_markdown(report)
    assert set(PAPER_NUMBERS) == {"MSRS", "RoadScene", "Lytro", "MEFB"}
    with pytest.raises(DataError, match="known"):
        paper_row("TNO")


# ----------------------------------------------------------------------------- CLI
def test_rfbench_group_lists_quality():
    from refusion.benchmarks.cli import main

    res = CliRunner().invoke(main, ["quality", "--help"])
    assert res.exit_code == 0 and "--baseline" in res.output and "--save-images" in res.output


def test_cli_runs_and_writes_tables(tmp_path):
    root = _write_split(tmp_path / "split", n=2)
    out = tmp_path / "out"
    args = ["--task", "ivif", "--data", str(root), "--baseline", "average", "--baseline", "Laplacian",
            "--metrics", "EN,sd", "--metrics", "Q_AB/F", "--out", str(out), "--save-images", "--no-progress",
            "--paper", "MSRS"]
    res = CliRunner().invoke(quality, args)
    assert res.exit_code == 0, res.output
    assert "| method | EN | SD | Q_AB/F | s/image |" in res.output
    assert "ReFusion (paper)" in res.output
    assert (out / "quality_ivif.json").is_file() and (out / "quality_ivif.md").is_file()
    assert len(list((out / "images" / "laplacian").glob("*.png"))) == 2
    # a second run without --overwrite refuses before doing any work
    res = CliRunner().invoke(quality, args)
    assert res.exit_code == 1 and "--overwrite" in res.output and "Traceback" not in res.output
    assert CliRunner().invoke(quality, args + ["--overwrite"]).exit_code == 0


@pytest.mark.parametrize(
    "setup, extra, message",
    [
        ("empty", [], "no images in"),
        ("unpaired", [], "unpaired images"),
        ("sizes", [], "sources differ in size"),
        ("ok", ["--model", "missing.pt"], "model file not found"),
        ("ok", ["--metrics", "FMI"], "unknown metric"),
        ("ok", ["--paper", "auto"], "cannot tell the dataset"),
        ("none", [], "nothing to evaluate"),
    ],
)
def test_cli_errors_are_one_message(tmp_path, setup, extra, message):
    root = tmp_path / "split"
    if setup == "empty":
        (root / "ir").mkdir(parents=True)
        (root / "vis").mkdir()
    else:
        _write_split(root, n=1)
    if setup == "unpaired":
        cv2.imwrite(str(root / "ir" / "lonely.png"), np.zeros((8, 8), np.uint8))
    if setup == "sizes":
        cv2.imwrite(str(root / "vis" / "000.png"), np.zeros((30, 30, 3), np.uint8))
    baseline = [] if setup == "none" else ["--baseline", "average"]
    extra = [str(tmp_path / e) if e.endswith(".pt") else e for e in extra]
    res = CliRunner().invoke(
        quality, ["--task", "ivif", "--data", str(root), "--out", str(tmp_path / "o"), "--no-progress", *baseline, *extra]
    )
    assert res.exit_code != 0
    assert message in res.output
    assert "Traceback" not in res.output
    assert isinstance(res.exception, SystemExit)
