"""rfbench outputs (issue 13): results go to ./rfbench-results (never the checkout's benchmarks/results),
the folder is checked before timing starts, files are written atomically and never replaced silently."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from refusion.benchmarks.cli import main as rfbench
from refusion.benchmarks.results_io import DEFAULT_RESULTS_DIR, write_results

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "benchmarks" / "results"


def _default_out(command: str) -> Path:
    import importlib

    module, attr = {"latency": ("refusion.benchmarks.latency_cli", "latency"),
                    "train": ("refusion.benchmarks.train_cli", "train_speed")}[command]
    cmd = getattr(importlib.import_module(module), attr)
    (param,) = [p for p in cmd.params if p.name == "out_dir"]
    return Path(param.default)


@pytest.mark.parametrize("command", ["latency", "train"])
def test_default_results_folder_is_outside_the_checkout(command: str, tmp_path: Path, monkeypatch) -> None:
    default = _default_out(command)
    assert default == DEFAULT_RESULTS_DIR and not default.is_absolute()
    monkeypatch.chdir(tmp_path)
    assert COMMITTED not in default.resolve().parents and default.resolve() != COMMITTED


@pytest.mark.parametrize("command", ["latency", "train"])
def test_unwritable_results_folder_fails_before_timing(command: str, tmp_path: Path) -> None:
    blocker = tmp_path / "somefile"
    blocker.write_text("x")
    model = tmp_path / "m.pt"
    model.write_bytes(b"not read: the output check comes first")
    args = ["latency", "--model", str(model)] if command == "latency" else ["train", "--device", "cpu"]
    res = CliRunner().invoke(rfbench, [*args, "--out", str(blocker / "results")])
    assert res.exit_code == 1, res.output
    assert "cannot write results folder" in res.output and "is a file, not a folder" in res.output
    assert "Traceback" not in res.output


def test_existing_results_are_kept_and_numbered(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        js, md = write_results(tmp_path, "latency_x", "{}\n", "# one\n")
        js2, md2 = write_results(tmp_path, "latency_x", '{"b": 1}\n', "# two\n")
        assert md.read_text() == "# one\n" and json.loads(js2.read_text()) == {"b": 1}
        js3, _ = write_results(tmp_path, "latency_x", '{"c": 1}\n', "# three\n", overwrite=True)
    finally:
        os.umask(old)
    assert (js.name, js2.name, md2.name, js3.name) == ("latency_x.json", "latency_x-2.json", "latency_x-2.md",
                                                      "latency_x.json")
    assert json.loads(js.read_text()) == {"c": 1} and md.read_text() == "# three\n"
    assert md2.read_text() == "# two\n"
    assert js2.stat().st_mode & 0o777 == 0o644
    assert not list(tmp_path.glob(".*tmp"))
