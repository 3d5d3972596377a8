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
