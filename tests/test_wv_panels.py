"""rfbench panels: P's w and v drawn on test pairs from a trained checkpoint."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("torch")

from refusion.benchmarks.cli import main as rfbench  # noqa: E402

BUNDLED = Path(__file__).resolve().parents[1] / "train" / "models" / "ivif.pt"


def _split(root: Path, n: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for role in ("ir", "vis"):
        (root / role).mkdir(parents=True)
    for i in range(n):
        base = cv2.GaussianBlur((rng.random((48, 64)) * 255).astype(np.uint8), (0, 0), 2)
        cv2.imwrite(str(root / "ir" / f"{i}.png"), base)
        cv2.imwrite(str(root / "vis" / f"{i}.png"), 255 - base)
    return root


def test_panels_show_one_row_per_pair_with_p_weights(tmp_path: Path, torch_one_thread) -> None:
    from refusion.train.panels import LABEL_H, TILE

    data = _split(tmp_path / "test")
    out = tmp_path / "wv.png"
    res = CliRunner().invoke(rfbench, ["panels", str(BUNDLED), "--task", "ivif", "--data", str(data),
                                       "--pairs", "2", "-o", str(out)])
    assert res.exit_code == 0, res.output
    img = cv2.imread(str(out))
    tile_h = round(48 * TILE / 64)
    assert img.shape[0] == 2 * (tile_h + 2 * LABEL_H)  # title + label + tile, per pair
    res = CliRunner().invoke(rfbench, ["panels", str(BUNDLED), "--task", "ivif", "--data", str(data), "-o", str(out)])
    assert res.exit_code == 1 and "--overwrite" in res.output


def test_panels_need_a_checkpoint_with_p(tmp_path: Path, torch_one_thread) -> None:
    from refusion.train.checkpoint import save_checkpoint
    from refusion.train.networks import FusionConfig, FusionNet

    ckpt = save_checkpoint(tmp_path / "f_only.pt", {"fusion": FusionNet().state_dict(), "task": "ivif",
                                                    "model_config": FusionConfig().to_dict()})
    res = CliRunner().invoke(rfbench, ["panels", str(ckpt), "--task", "ivif", "--data", str(_split(tmp_path / "t")),
                                       "-o", str(tmp_path / "x.png")])
    assert res.exit_code == 1 and "no loss-proposal network P" in res.output and "Traceback" not in res.output
