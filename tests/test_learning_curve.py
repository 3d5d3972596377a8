"""rfbench curve: snapshots by training minutes, scored as rfbench quality scores them, drawn."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from refusion.benchmarks.cli import main as rfbench
from refusion.benchmarks.learning_curve import snapshots
from refusion.benchmarks.quality import QualityConfig, evaluate
from refusion.runtime.errors import DataError
from refusion.train.trainer import Trainer

from .test_train_loop import make_dataset, tiny_config

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture
def run_with_snapshots(tmp_path, monkeypatch):
    import refusion.train.trainer as trainer_mod

    clock = {"t": 0.0}

    def fake_clock():
        clock["t"] += 60.0
        return clock["t"]

    monkeypatch.setattr(trainer_mod.time, "perf_counter", fake_clock)
    root = make_dataset(tmp_path / "d", n_train=3, n_test=2)
    Trainer(tiny_config(root, epochs=1, snapshot_minutes=(2, 4), max_steps=5), tmp_path / "run").run()
    return tmp_path / "run", root


def test_curve_scores_each_snapshot_like_rfbench_quality(run_with_snapshots, tmp_path):
    run, root = run_with_snapshots
    assert [m for m, _ in snapshots(run)] == [2, 4]
    res = CliRunner().invoke(rfbench, ["curve", str(run), "--task", "ivif", "--data", str(root / "test"),
                                       "--baseline", "average", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "out" / "curve_ivif.json").read_text())
    entry = report["curve"]["run"]
    assert entry["minutes"] == [2, 4]
    direct = evaluate(QualityConfig(task="ivif", data=root / "test", models=(run / "minutes_004.pt",),
                                    baselines=("average",)))
    by = {r["method"]: r["mean"] for r in direct["rows"]}
    assert entry["SF"][1] == pytest.approx(by["minutes_004"]["SF"], rel=1e-9)
    assert entry["QABF"][1] == pytest.approx(by["minutes_004"]["QABF"], rel=1e-9)
    assert entry["SF"][0] != entry["SF"][1]  # two different states of the run
    assert report["baseline_levels"]["average"]["EN"] == pytest.approx(by["average"]["EN"], rel=1e-9)
    png = cv2.imread(str(tmp_path / "out" / "curve_ivif.png"))
    assert png is not None and png.shape[0] > 200 and png.shape[1] > 600
    assert (png < 200).any()  # something is drawn
    assert "| run | 4 |" in (tmp_path / "out" / "curve_ivif.md").read_text()


def test_curve_without_snapshots_is_one_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="snapshot-minutes"):
        snapshots(tmp_path / "empty")
    root = make_dataset(tmp_path / "d", n_train=1, n_test=1)
    res = CliRunner().invoke(rfbench, ["curve", str(tmp_path / "empty"), "--task", "ivif", "--data",
                                       str(root / "test"), "--out", str(tmp_path / "out")])
    assert res.exit_code != 0 and "snapshot-minutes" in res.output and "Traceback" not in res.output
