"""rfbench train on a tiny size: times the fusion step and both meta-gradient routes in one run."""
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
    steps = {s["step"]: s for s in r["steps"]}
    assert set(steps) == {"fusion", "meta:jvp", "meta:double_backward"}
    assert all(s["median_s"] > 0 and s["cpu_s"] > 0 and s["peak_memory_mib"] > 0 for s in steps.values())
    assert r["ratios"]["fusion"] == 1.0
    assert r["ratios"]["meta:jvp"] == steps["meta:jvp"]["median_s"] / steps["fusion"]["median_s"]
    md = next(tmp_path.glob("*.md")).read_text()
    assert "meta:double_backward" in md and "in fusion steps" in md
