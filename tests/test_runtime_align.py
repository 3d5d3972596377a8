"""Alignment: resize, homography JSON (rescaled to frame sizes), and `rfrun calibrate`."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from refusion.runtime.align import (
    AlignConfig,
    Aligner,
    Homography,
    calibrate_checkerboard,
    estimate_homography,
    load_homography,
    read_point_pairs,
    save_homography,
)
from refusion.runtime.cli import cli
from refusion.runtime.errors import DataError, SizeError
from refusion.runtime.size import Size

H_TRUE = np.array([[1.05, 0.02, 6.0], [-0.01, 0.98, -4.0], [1e-5, 2e-5, 1.0]])


def project(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return cv2.perspectiveTransform(pts[None].astype(np.float64), h)[0].astype(np.float32)


def test_resize_and_no_resize() -> None:
    a, b = np.zeros((24, 32, 3), np.uint8), np.zeros((48, 64, 3), np.uint8)
    warnings: list[str] = []
    al = Aligner(AlignConfig(), warnings.append)
    _, b2 = al(a, b)
    al(a, b)
    assert b2.shape == a.shape and len(warnings) == 1 and "resizing b to 24x32" in warnings[0]
    with pytest.raises(SizeError, match="a is 24x32, b is 48x64"):
        Aligner(AlignConfig(no_resize=True))(a, b)
    a3, b3 = Aligner(AlignConfig(size=Size(12, 16)))(a, a.copy())
    assert a3.shape == b3.shape == (12, 16, 3)


def test_homography_round_trip_and_rescale(tmp_path: Path) -> None:
    pb = np.array([[10, 10], [200, 15], [190, 150], [20, 140], [100, 80], [60, 30]], np.float32)
    pa = project(H_TRUE, pb)
    h = estimate_homography(pa, pb, Size(240, 320), Size(240, 320))
    assert h.rms_px < 1e-2
    path = save_homography(tmp_path / "h.json", h)
    with pytest.raises(DataError, match="--overwrite"):
        save_homography(path, h)
    loaded = load_homography(path)
    assert loaded.size_a == Size(240, 320) and json.loads(path.read_text())["size_a"] == [320, 240]  # file: [W, H]
    np.testing.assert_allclose(loaded.matrix, H_TRUE, rtol=1e-3, atol=1e-4)
    # frames at half the calibrated size: the same physical mapping, scaled
    half = loaded.scaled(Size(120, 160), Size(120, 160))
    np.testing.assert_allclose(project(half, pb / 2), pa / 2, atol=1e-2)


def test_warp_moves_a_dot_where_the_homography_says() -> None:
    h = Homography(np.array([[1.0, 0, 5], [0, 1.0, 3], [0, 0, 1]]), Size(48, 64), Size(48, 64))
    b = np.zeros((48, 64, 3), np.uint8)
    b[10, 20] = 255
    al = Aligner(AlignConfig())
    al.homography = h
    _, warped = al(np.zeros_like(b), b)
    assert tuple(np.argwhere(warped[..., 0] == 255)[0]) == (13, 25)


def test_bad_homography_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"homography": [[1, 0], [0, 1]]}))
    with pytest.raises(DataError, match="3x3"):
        load_homography(bad)
    with pytest.raises(DataError, match="not found"):
        load_homography(tmp_path / "none.json")


def test_point_files_json_and_csv(tmp_path: Path) -> None:
    pb = np.array([[0, 0], [100, 0], [100, 80], [0, 80], [50, 40]], np.float32)
    pa = project(H_TRUE, pb)
    (tmp_path / "p.json").write_text(json.dumps({"a": pa.tolist(), "b": pb.tolist()}))
    rows = "xa,ya,xb,yb\n" + "\n".join(f"{x},{y},{u},{v}" for (x, y), (u, v) in zip(pa, pb))
    (tmp_path / "p.csv").write_text(rows)
    for name in ("p.json", "p.csv"):
        qa, qb = read_point_pairs(tmp_path / name)
        np.testing.assert_allclose(qa, pa, atol=1e-4)
        np.testing.assert_allclose(qb, pb)
    with pytest.raises(DataError, match="at least 4"):
        estimate_homography(pa[:3], pb[:3])


def checkerboard(cols: int = 7, rows: int = 5, square: int = 20, margin: int = 30) -> np.ndarray:
    h, w = (rows + 1) * square + 2 * margin, (cols + 1) * square + 2 * margin
    img = np.full((h, w), 255, np.uint8)
    for r in range(rows + 1):
        for c in range(cols + 1):
            if (r + c) % 2 == 0:
                y, x = margin + r * square, margin + c * square
                img[y:y + square, x:x + square] = 0
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)


def test_checkerboard_calibration_and_cli(tmp_path: Path) -> None:
    board_b = checkerboard()
    h, w = board_b.shape[:2]
    board_a = cv2.warpPerspective(board_b, H_TRUE, (w, h), borderValue=(255, 255, 255))
    board_a = 255 - board_a  # the IR view of a heated board has inverted contrast
    hom = calibrate_checkerboard(board_a, board_b, (7, 5))
    assert hom.rms_px < 0.5
    pts = np.array([[60, 60], [150, 90]], np.float32)
    np.testing.assert_allclose(project(hom.matrix, pts), project(H_TRUE, pts), atol=0.5)

    cv2.imwrite(str(tmp_path / "a.png"), board_a)
    cv2.imwrite(str(tmp_path / "b.png"), board_b)
    out = tmp_path / "h.json"
    res = CliRunner().invoke(cli, ["calibrate", "--checkerboard", str(tmp_path / "a.png"), str(tmp_path / "b.png"),
                                   "--pattern", "7x5", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "RMS error" in res.output and load_homography(out).size_a == Size(h, w)
    res = CliRunner().invoke(cli, ["calibrate", "--checkerboard", str(tmp_path / "a.png"), str(tmp_path / "b.png"),
                                   "--pattern", "9x6", "-o", str(tmp_path / "h2.json")])
    assert res.exit_code == 1 and "no checkerboard with 9x6 inner corners" in res.output
    assert not (tmp_path / "h2.json").exists()
