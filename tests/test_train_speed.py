"""rfbench train on a tiny size: runs, reports both step times and writes JSON + markdown."""
from __future__ import annotations

import json

from click.testing import CliRunner

from refusion.benchmarks.cli import main as rfbench


def test_train_speed_cli_writes_results(tmp_path):
    res = CliRunner().invoke(rfbench, ["train", "--device", "cpu", "--size", "16", "--repeats", "1",
                                       "--warmup", "0", "--threads", "1", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    files = sorted(p.suffix for p in tmp_path.iterdir())
    assert files == [".json", ".md"]
    report = json.loads(next(tmp_path.glob("*.json")).read_text())
    r = report["results"][0]
    assert r["device"] == "cpu" and r["meta_step_s"] > 0 and r["fusion_step_s"] > 0
