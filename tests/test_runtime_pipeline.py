"""rfrun pipeline end to end on CPU: folders -> colour ONNX -> video, live sources, Ctrl-C, the demo."""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

try:
    from tests.test_runtime_models import build_standin_colour_onnx, standin_reference
except ImportError:  # tests/ run as a plain folder
    from test_runtime_models import build_standin_colour_onnx, standin_reference

from refusion.runtime.backends import open_backend  # noqa: E402
from refusion.runtime.backends.base import Backend  # noqa: E402
from refusion.runtime.imageio import list_images, read_image  # noqa: E402
from refusion.runtime.pipeline import Fuser, RunConfig, run  # noqa: E402
from refusion.runtime.progress import WARNING, Progress  # noqa: E402
from refusion.runtime.sources import Source  # noqa: E402


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory) -> Path:
    """A real colour graph (random small FusionNet via refusion.export) or, without torch, the stand-in."""
    folder = tmp_path_factory.mktemp("model")
    try:
        import torch

        from refusion.export.onnx_export import export_graph
        from refusion.runtime.card import ModelCard
        from refusion.train.networks import FusionConfig, FusionNet
    except ImportError:
        return build_standin_colour_onnx(folder / "standin.colour.onnx")
    torch.manual_seed(0)
    net = FusionNet(FusionConfig(dim=8, heads=2, encoder_blocks=1, decoder_blocks=1)).eval()
    card = ModelCard(task="ivif", sources=("ir", "vis"), model_config=net.config.to_dict())
    path = folder / "small.colour.onnx"
    export_graph(net, "colour", False, path, card)
    return path


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> Path:
    return build_standin_colour_onnx(tmp_path_factory.mktemp("standin") / "standin.colour.onnx")


def read_video(path: Path) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    return frames


class Recorder(Progress):
    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.counts: list[int] = []

    def message(self, text: str) -> None:
        if text.startswith(WARNING):
            self.warnings.append(text[len(WARNING):])

    def step(self, info) -> None:
        self.counts.append(info["frames"])


def test_tno_sequence_folders_to_video(tmp_path: Path, data_dir: Path, colour_model: Path) -> None:
    seq = data_dir / "ivif" / "TNO" / "seq_Tree"
    if not (seq / "ir").is_dir():
        pytest.skip(f"TNO sequence not found at {seq}")
    n = 5
    for role in ("ir", "vis"):
        (tmp_path / role).mkdir()
        for f in list_images(seq / role)[:n]:
            shutil.copy(f, tmp_path / role / f.name)
    video, frames_dir = tmp_path / "fused.mp4", tmp_path / "frames"
    config = RunConfig(a=str(tmp_path / "ir"), b=str(tmp_path / "vis"), model=colour_model, backend="ort-cpu",
                       outputs=(video, frames_dir))
    summary = run(config, Recorder())
    first = read_image(list_images(tmp_path / "ir")[0])
    h, w = first.shape[:2]
    assert summary.frames == n and summary.dropped == 0 and summary.skipped == 0
    assert summary.normalisation == "ema"  # video output: a stable mapping
    assert summary.size == [h, w]
    assert set(summary.stages_ms) == {"capture", "align", "infer", "sink", "latency"}
    written = read_video(video)
    assert len(written) == n and written[0].shape == (h, w, 3)
    assert not list(tmp_path.glob(".*partial*"))
    # the same frames fused one by one through the library give identical results
    with open_backend(colour_model, "ort-cpu") as be:
        fuser = Fuser(be, "ema", 0.9)
        for fa, fb in zip(list_images(tmp_path / "ir"), list_images(tmp_path / "vis")):
            expected = fuser(read_image(fa), read_image(fb))
            np.testing.assert_array_equal(read_image(frames_dir / f"{fa.stem}.png"), expected)


def test_normalisation_state_follows_contract(standin: Path) -> None:
    rng = np.random.default_rng(1)
    frames = [(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8), rng.integers(0, 256, (16, 20, 3), dtype=np.uint8))
              for _ in range(4)]
    with open_backend(standin, "ort-cpu") as be:
        for mode in ("minmax", "ema", "none"):
            fuser = Fuser(be, mode, 0.8)
            state = np.array([0, 1, 1] if mode == "none" else [0, 0, 0], np.float32)
            for a, b in frames:
                got = fuser(a, b)
                ref, ref_state = standin_reference(a, b, state)
                assert np.abs(got.astype(int) - ref).max() <= 1, mode
                if mode == "ema":
                    state = np.array([ref_state[0], ref_state[1], 0.8], np.float32)


def test_demo_cli_writes_video(tmp_path: Path, standin: Path) -> None:
    from click.testing import CliRunner

    from refusion.runtime.cli import cli

    out, stats = tmp_path / "demo.mp4", tmp_path / "stats.json"
    args = ["--demo", "--frames", "8", "--size", "64x96", "-m", str(standin), "-o", str(out),
            "--stats-json", str(stats), "--side-by-side", "--overlay", "-q"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "FPS" in res.output and "p95" in res.output
    frames = read_video(out)
    assert len(frames) == 8 and frames[0].shape == (64, 3 * 96, 3)
    import json

    data = json.loads(stats.read_text())
    assert data["frames"] == 8 and data["stages_ms"]["infer"]["p99"] >= 0
    # a second run does not overwrite without --overwrite
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1 and "--overwrite" in res.output


def test_demo_is_deterministic() -> None:
    from refusion.runtime.demo import DemoScene

    ir, vis = DemoScene(80, 60, seed=3).frame(7)
    ir2, vis2 = DemoScene(80, 60, seed=3).frame(7)
    assert ir.shape == vis.shape == (60, 80, 3) and ir.dtype == np.uint8
    assert np.array_equal(ir, ir2) and np.array_equal(vis, vis2)
    assert np.array_equal(ir[..., 0], ir[..., 2])  # IR is grey
    assert not np.array_equal(vis[..., 0], vis[..., 2])  # visible has colour


# -- live sources -----------------------------------------------------------------
class FastCamera(Source):
    """A simulated camera producing a new 240x320 frame every millisecond."""

    live = True

    def __init__(self, role: str, period: float = 0.001) -> None:
        super().__init__(f"fake-{role}", role)
        self.period = period
        self.base = np.full((240, 320, 3), 100 if role == "a" else 150, np.uint8)

    def _open(self) -> None:
        pass

    def _grab(self) -> np.ndarray:
        time.sleep(self.period)
        return self.base.copy()  # a fresh array per frame, like a real capture


class SlowBackend(Backend):
    """A 'model' slower than the camera: 4 ms per pair."""

    name = "slow-fake"

    def open(self) -> "SlowBackend":
        self._open = True
        return self

    def infer(self, a, b, norm_state):
        time.sleep(0.004)
        return np.maximum(a, b), np.array([0.0, 1.0, 0.0], np.float32)

    def close(self) -> None:
        self._open = False


def test_live_source_drops_frames_with_bounded_latency_and_flat_memory() -> None:
    class MemoryRecorder(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.memory: dict[int, int] = {}

        def step(self, info) -> None:
            if info["frames"] in (50, 300):
                self.memory[info["frames"]] = tracemalloc.get_traced_memory()[0]

    rep = MemoryRecorder()
    config = RunConfig(a="fake", b="fake", max_frames=300, max_skew_ms=1000.0)
    tracemalloc.start()
    try:
        summary = run(config, rep, backend=SlowBackend("fake.onnx"),
                      sources=(FastCamera("a"), FastCamera("b")))
    finally:
        tracemalloc.stop()
    assert summary.frames == 300 and summary.stopped_by == "max-frames"
    assert summary.dropped > 0  # the camera outpaced the model: old frames were dropped, not queued
    # latency stays bounded: a growing queue would make it grow with the run's length
    assert summary.stages_ms["latency"]["p99"] < 0.25 * summary.elapsed_s * 1e3
    # memory flat: 250 more frames of 230 KB each did not accumulate anywhere
    assert rep.memory[300] - rep.memory[50] < 4 * 2**20


class DroppingCamera(FastCamera):
    """Delivers a few frames, then stops for good (unplugged)."""

    def __init__(self, role: str, frames: int) -> None:
        super().__init__(role, period=0.002)
        self.left = frames
        self.reopened = 0

    def _grab(self):
        if self.left <= 0:
            return None
        self.left -= 1
        return super()._grab()

    def _reopen(self) -> bool:
        self.reopened += 1
        return False


def test_camera_dropout_retries_then_stops_cleanly(tmp_path: Path) -> None:
    from refusion.runtime.errors import SourceError

    cam = DroppingCamera("a", frames=20)
    out = tmp_path / "live.mp4"
    config = RunConfig(a="x", b="y", outputs=(out,), reconnect_delays=(0.01, 0.02, 0.04), max_skew_ms=1000.0)
    rep = Recorder()
    with pytest.raises(SourceError, match=r"stopped delivering frames and did not come back after 3 reconnection"):
        run(config, rep, backend=SlowBackend("fake.onnx"), sources=(cam, FastCamera("b")))
    assert cam.reopened == 3
    assert any("reconnecting" in w for w in rep.warnings)
    frames = read_video(out)  # finalised with what was fused before the camera went away
    assert 1 <= len(frames) <= 20
    assert not list(tmp_path.glob(".*partial*"))


def test_ctrl_c_leaves_playable_video(tmp_path: Path, standin: Path) -> None:
    out = tmp_path / "long.mp4"
    cmd = [sys.executable, "-m", "refusion.runtime.cli", "--demo", "--frames", "100000", "--size", "48x64",
           "-m", str(standin), "-o", str(out), "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial = tmp_path / ".long.partial.mp4"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (partial.exists() and partial.stat().st_size > 0):
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    frames = read_video(out)
    assert len(frames) > 0 and frames[0].shape == (48, 64, 3)
    assert f"frames {len(frames)}" in stdout or "frames" in stdout
    assert not partial.exists()
