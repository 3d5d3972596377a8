"""rfexport command line: help, default command, clean errors."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from refusion.export.cli import main


def test_help_lists_commands():
    r = CliRunner().invoke(main, ["--help"])
    assert r.exit_code == 0 and "engine" in r.output and "export" in r.output
    r = CliRunner().invoke(main, ["engine", "--help"])
    assert r.exit_code == 0 and "--version-compatible" in r.output and "--max-size" in r.output


def test_default_command_and_clean_errors(tmp_path):
    bad = tmp_path / "notes.pt"
    bad.write_text("not a checkpoint")
    r = CliRunner().invoke(main, ["--fp16", str(bad)])  # = rfexport export --fp16 notes.pt
    assert r.exit_code == 1 and "Error:" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, [str(tmp_path / "missing.pt")])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = CliRunner().invoke(main, ["engine", str(bad), "--max-size", "12x12"])
    assert r.exit_code == 2 and "must be at least 16" in r.output


def test_cli_export_writes_files_and_hint(tmp_path, official):
    pytest.importorskip("onnxruntime")
    r = CliRunner().invoke(
        main,
        [str(official / "ReFusion_MEIF.pth"), "--task", "meif", "--out", str(tmp_path), "--check-size", "40x56", "--no-engine"],
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "ReFusion_MEIF.onnx").is_file() and (tmp_path / "ReFusion_MEIF.colour.onnx").is_file()
    r = CliRunner().invoke(main, [str(official / "ReFusion_MEIF.pth"), "--task", "meif", "--out", str(tmp_path)])
    assert r.exit_code == 1 and "--overwrite" in r.output


def test_engine_rejects_a_file_that_is_not_onnx(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_text("hello, not a protobuf\n")
    r = CliRunner().invoke(main, ["engine", str(bad)])
    assert r.exit_code == 1 and "is not a readable ONNX model" in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


def test_short_help_and_subcommand_help():
    r = CliRunner().invoke(main, ["-h"])
    assert r.exit_code == 0 and "Commands:" in r.output and "triton" in r.output
    r = CliRunner().invoke(main, ["triton", "--help"])
    assert r.exit_code == 0 and "--repo" in r.output and "Triton model repository" in r.output
    assert "--fp16" not in r.output  # triton's help, not export's
    r = CliRunner().invoke(main, ["engine", "-h"])
    assert r.exit_code == 0 and "--trt-flavour" in r.output and "--compute-capability" in r.output
    r = CliRunner().invoke(main, ["export", "-h"])
    assert r.exit_code == 0 and "--fp16-tolerance" in r.output
    r = CliRunner().invoke(main, ["engine", "x.onnx", "--compute-capability", "eight"])
    assert r.exit_code == 2


def _unwritable(tmp_path):
    import os

    if os.geteuid() == 0:
        return "/proc/refusion-no-such-dir"  # even root cannot create folders in /proc
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    return str(ro / "out")


def test_export_into_an_unwritable_folder_fails_before_any_work(tmp_path, official):
    import time

    t0 = time.perf_counter()
    r = CliRunner().invoke(main, [str(official / "ReFusion_IVIF.pth"), "--task", "ivif", "--out", _unwritable(tmp_path)])
    assert r.exit_code == 1 and "cannot write into" in r.output and "--out" in r.output
    assert "Traceback" not in r.output and time.perf_counter() - t0 < 5  # refused before loading or exporting


def test_fp16_beyond_tolerance_keeps_fp32_and_says_how_to_accept(tmp_path, official, torch_one_thread):
    pytest.importorskip("onnxruntime")
    args = [str(official / "ReFusion_IVIF.pth"), "--task", "ivif", "--out", str(tmp_path), "--fp16", "--no-engine",
            "--check-size", "40x56", "--fp16-check-size", "48x64"]
    r = CliRunner().invoke(main, [*args, "--fp16-tolerance", "0"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "FP16 graphs refused" in r.output and "levels (out of 255) at 48x64" in r.output
    assert "(row, column)" in r.output and "--fp16-tolerance 1" in r.output
    assert ".tmp" not in r.output  # messages name the final files, never the temporary ones
    assert (tmp_path / "ReFusion_IVIF.onnx").is_file() and (tmp_path / "ReFusion_IVIF.colour.onnx").is_file()
    assert not list(tmp_path.glob("*fp16*")) and not list(tmp_path.glob(".*"))
    r = CliRunner().invoke(main, [*args, "--fp16-tolerance", "1", "--overwrite"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "ReFusion_IVIF.fp16.onnx").is_file() and (tmp_path / "ReFusion_IVIF.colour.fp16.onnx").is_file()


def test_triton_subcommand(tmp_path):
    from refusion.runtime.card import ModelCard, onnx_metadata

    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 1, "H", "W"])
    y = helper.make_tensor_value_info("fused", TensorProto.FLOAT, [1, 1, "H", "W"])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["a"], ["fused"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    for k, v in onnx_metadata(ModelCard(task="ivif", sources=("ir", "vis")), "core", "fp32").items():
        e = model.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(model, str(tmp_path / "m.onnx"))
    r = CliRunner().invoke(main, ["triton", str(tmp_path / "m.onnx"), "--repo", str(tmp_path / "repo")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "repo" / "m_onnx" / "1" / "model.onnx").is_file()
    assert '"ivif"' in (tmp_path / "repo" / "m_onnx" / "config.pbtxt").read_text().replace('\\"', '"')
