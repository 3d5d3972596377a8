"""rfrun as a new user meets it (issue 13): the documented command lines, outputs that cannot be
written, signals with and without a pipe, corrupt and mismatched inputs, the progress rate."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("onnxruntime")

try:
    from tests.test_runtime_models import build_standin_colour_onnx
except ImportError:  # tests/ run as a plain folder
    from test_runtime_models import build_standin_colour_onnx

from refusion.runtime import cli as rfrun_cli  # noqa: E402
from refusion.runtime import fsutil  # noqa: E402
from refusion.runtime.align import AlignConfig, Aligner  # noqa: E402
from refusion.runtime.errors import OutputError, SizeError, SourceError  # noqa: E402
from refusion.runtime.progress import TqdmProgress  # noqa: E402
from refusion.runtime.stats import FpsMeter  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> Path:
    return build_standin_colour_onnx(tmp_path_factory.mktemp("m") / "standin.colour.onnx")


def image(path: Path, value: int = 90, h: int = 24, w: int = 32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((h, w, 3), value, np.uint8)
    img[: h // 2] = 255 - value
    cv2.imwrite(str(path), img)
    return path


def video(path: Path, n: int, h: int = 24, w: int = 32) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
    for i in range(n):
        writer.write(np.full((h, w, 3), 20 * i % 256, np.uint8))
    writer.release()
    return path


def rfrun(*args: object):
    res = CliRunner().invoke(rfrun_cli.cli, [str(a) for a in args])
    assert "Traceback" not in res.output
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit), repr(res.exception)
    return res


def frames_in(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


# -- 1. the documented command lines ------------------------------------------------------------
def test_engine_is_an_alias_of_model(tmp_path: Path) -> None:
    a, b = image(tmp_path / "a.png"), image(tmp_path / "b.png", 30)
    res = rfrun("--engine", tmp_path / "missing.plan", "--ir", a, "--vis", b, "-o", tmp_path / "f.png")
    assert res.exit_code == 1 and "model not found" in res.output and "missing.plan" in res.output


def test_live_sources_without_out_give_one_hint_when_no_window(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(rfrun_cli, "window_support", lambda: "this OpenCV build has no window support")
    res = rfrun("--engine", tmp_path / "ivif.plan", "--ir", "cam0", "--vis", "cam1")
    assert res.exit_code == 2
    assert "no window to show the live fusion in" in res.output and "-o fused.mp4" in res.output


def test_live_sources_without_out_open_a_window_where_possible(monkeypatch, standin: Path) -> None:
    monkeypatch.setattr(rfrun_cli, "window_support", lambda: "")
    opened = []

    def fake_run(config, progress):
        opened.append(config)
        raise SourceError("stopped by the test")

    monkeypatch.setattr(rfrun_cli, "run", fake_run)
    res = rfrun("-m", standin, "--ir", "cam97", "--vis", "cam98")
    assert res.exit_code == 1 and "showing the fused stream in a window" in res.output
    assert opened and opened[0].show and opened[0].outputs == ()


def test_files_without_out_still_say_what_to_give(tmp_path: Path) -> None:
    a, b = image(tmp_path / "a.png"), image(tmp_path / "b.png", 30)
    res = rfrun("--ir", a, "--vis", b)
    assert res.exit_code == 2 and "give --out" in res.output


def test_dash_h_everywhere() -> None:
    from refusion.benchmarks.cli import main as rfbench
    from refusion.train.cli import main as rftrain

    runner = CliRunner()
    for command, args in [(rfrun_cli.cli, []), (rfrun_cli.cli, ["calibrate"]), (rftrain, []), (rfbench, []),
                          (rfbench, ["quality"]), (rfbench, ["latency"]), (rfbench, ["train"])]:
        res = runner.invoke(command, [*args, "-h"])
        assert res.exit_code == 0 and "Usage:" in res.output, (args, res.output)
    assert "30-70%," in runner.invoke(rftrain, ["-h"]).output


def test_dash_h_on_rfbench_subcommands_called_on_their_own() -> None:
    # click caches a command's help option from the first context it runs in: a subcommand first
    # called on its own (as tests do) must still know -h when it later runs under rfbench.
    import importlib

    from refusion.benchmarks.cli import SUBCOMMANDS
    from refusion.benchmarks.cli import main as rfbench

    runner = CliRunner()
    for name, target in SUBCOMMANDS.items():
        module, attr = target.split(":")
        command = getattr(importlib.import_module(module), attr)
        res = runner.invoke(command, ["-h"])
        assert res.exit_code == 0 and "Usage:" in res.output, (name, res.output)
        res = runner.invoke(rfbench, [name, "-h"])
        assert res.exit_code == 0 and "Usage:" in res.output, (name, res.output)


def test_second_demo_does_not_fail_on_the_first_ones_video(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        res = rfrun("--demo", "--frames", "2", "--size", "32x32", "-q")
        assert res.exit_code == 0, res.output
    assert frames_in(tmp_path / "rfrun-demo.mp4") == 2 and frames_in(tmp_path / "rfrun-demo-2.mp4") == 2
    assert "wrote rfrun-demo-2.mp4" in res.output


# -- 2. outputs ---------------------------------------------------------------------------------
def test_output_under_a_regular_file_fails_before_any_work(tmp_path: Path) -> None:
    a, b = image(tmp_path / "a.png"), image(tmp_path / "b.png", 30)
    blocker = tmp_path / "somefile"
    blocker.write_text("not a folder")
    # the model is missing too: the output is checked first, before anything slow
    for out in ("out.mp4", "out.png", "frames"):
        res = rfrun("-m", tmp_path / "missing.onnx", "--ir", a, "--vis", b, "-o", blocker / out)
        assert res.exit_code == 1 and "is a file, not a folder" in res.output, res.output
    res = rfrun("--ir", a, "--vis", b, "-o", tmp_path / "ok.png", "--stats-json", blocker / "s.json")
    assert res.exit_code == 1 and "cannot write --stats-json" in res.output
    assert not (tmp_path / "ok.png").exists() and blocker.read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a folder without write permission; "
                    "test_output_under_a_regular_file_fails_before_any_work covers the check")
def test_output_in_a_folder_without_write_permission(tmp_path: Path) -> None:
    a, b = image(tmp_path / "a.png"), image(tmp_path / "b.png", 30)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        res = rfrun("--ir", a, "--vis", b, "-o", locked / "out.mp4")
        assert res.exit_code == 1 and "not writable" in res.output
    finally:
        locked.chmod(0o700)


def test_output_on_a_read_only_file_system(tmp_path: Path) -> None:
    """The case of the issue (EROFS after the first inference); needs root to mount a read-only tmpfs."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only tmpfs needs root; the read-only check is covered by the other tests")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)],
                             capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("cannot mount a tmpfs here (no privilege in this container)")
    try:
        a, b = image(tmp_path / "a.png"), image(tmp_path / "b.png", 30)
        res = rfrun("-m", tmp_path / "missing.onnx", "--ir", a, "--vis", b, "-o", ro / "out.mp4")
        assert res.exit_code == 1 and "not writable (read-only file system)" in res.output, res.output
    finally:
        subprocess.run(["umount", str(ro)], check=False)


def test_check_writable_names_what_blocks() -> None:
    with pytest.raises(OutputError, match="is a file, not a folder"):
        fsutil.check_writable(Path(__file__) / "x" / "y.mp4")
    with pytest.raises(OutputError, match="it is a folder"):
        fsutil.check_writable(Path(__file__).parent, "video")


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_atomic_writes_take_their_mode_from_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        path = fsutil.atomic_write_text(tmp_path / "x.json", "{}")
        res = rfrun("--ir", image(tmp_path / "a.png"), "--vis", image(tmp_path / "b.png", 30),
                    "-o", tmp_path / "f.png", "-q", "--stats-json", tmp_path / "s.json")
    finally:
        os.umask(old)
    assert res.exit_code == 0, res.output
    for p in (path, tmp_path / "f.png", tmp_path / "s.json"):
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, p


def test_huge_size_is_a_clear_error(tmp_path: Path) -> None:
    a, b = image(tmp_path / "a.png"), image(tmp_path / "b.png", 30)
    res = rfrun("--ir", a, "--vis", b, "--size", "100000x100000", "-o", tmp_path / "f.png")
    assert res.exit_code == 2 and "pixels per frame" in res.output
    with pytest.raises(SizeError, match="pixels; at most"):
        Aligner(AlignConfig(size=(100000, 100000)))


SIGNAL_CASES = [("SIGINT", True), ("SIGINT", False), ("SIGTERM", False), ("SIGTERM", True)]


@pytest.mark.parametrize("signame,reader_gone", SIGNAL_CASES,
                         ids=[f"{s}-{'pipe-closed' if c else 'pipe-open'}" for s, c in SIGNAL_CASES])
def test_signal_finalises_the_video_under_its_name(tmp_path: Path, signame: str, reader_gone: bool) -> None:
    """``rfrun ... 2>&1 | tee log`` and Ctrl-C (tee dies too), or SIGTERM from a service manager."""
    out = tmp_path / "fused.mp4"
    partial = tmp_path / ".fused.partial.mp4"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO.parent)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "refusion.runtime.cli", "--demo", "--frames", "100000", "--size", "32x32",
         "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 120
        while not partial.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert partial.exists(), "rfrun did not start writing"
        time.sleep(1.0)  # some frames
        if reader_gone:
            proc.stdout.close()
        proc.send_signal(getattr(signal, signame))
        if reader_gone:
            rc, text = proc.wait(timeout=60), ""
        else:
            text = proc.communicate(timeout=60)[0].decode(errors="replace")
            rc = proc.returncode
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 128 + getattr(signal, signame)
    assert out.is_file() and not partial.exists()
    assert frames_in(out) > 0
    if not reader_gone:
        assert f"interrupted by {signame}: {out} holds the frames fused so far" in text
        assert "Traceback" not in text


def test_calibrate_checks_its_output_first(tmp_path: Path) -> None:
    blocker = tmp_path / "somefile"
    blocker.write_text("x")
    points = tmp_path / "p.json"
    points.write_text('{"a": [[0, 0], [1, 0], [0, 1], [1, 1]], "b": [[0, 0], [1, 0], [0, 1], [1, 1]]}')
    res = rfrun("calibrate", "--points", points, "-o", blocker / "h.json")
    assert res.exit_code == 1 and "cannot write homography" in res.output


# -- 3. inputs ---------------------------------------------------------------------------------
def test_truncated_still_pair_is_an_error(tmp_path: Path, standin: Path) -> None:
    a = image(tmp_path / "a.png", h=64, w=64)
    data = a.read_bytes()
    a.write_bytes(data[: len(data) // 2])
    b = image(tmp_path / "b.png", 30, h=64, w=64)
    res = rfrun("-m", standin, "--ir", a, "--vis", b, "-o", tmp_path / "f.png", "-q")
    assert res.exit_code == 1 and "no frame could be fused" in res.output and "a.png" in res.output
    assert "warning" not in res.output  # one message, not a warning and then an error
    assert not (tmp_path / "f.png").exists()
    # a folder whose every frame is corrupt: the same error after the skip warnings
    for i in range(2):
        (tmp_path / "fa").mkdir(exist_ok=True)
        (tmp_path / "fa" / f"{i}.png").write_bytes(data[: len(data) // 2])
        image(tmp_path / "fb" / f"{i}.png", h=64, w=64)
    res = rfrun("-m", standin, "--ir", tmp_path / "fa", "--vis", tmp_path / "fb", "-o", tmp_path / "o", "-q")
    assert res.exit_code == 1 and "no frame could be fused" in res.output and "(and 1 more)" in res.output


def test_one_file_folders_with_other_names_are_no_pair(tmp_path: Path, standin: Path) -> None:
    image(tmp_path / "fa" / "a.png")
    image(tmp_path / "fb" / "b.png", 30)
    res = rfrun("-m", standin, "--ir", tmp_path / "fa", "--vis", tmp_path / "fb", "-o", tmp_path / "out")
    assert res.exit_code == 1 and "no file names in common" in res.output and "--pair-by order" in res.output
    assert not (tmp_path / "out").exists()
    res = rfrun("-m", standin, "--ir", tmp_path / "fa", "--vis", tmp_path / "fb", "-o", tmp_path / "out",
                "--pair-by", "order", "-q")
    assert res.exit_code == 0 and (tmp_path / "out" / "a.png").is_file()


def test_unequal_streams_say_which_ran_out(tmp_path: Path, standin: Path) -> None:
    long, short = video(tmp_path / "long.avi", 6), video(tmp_path / "short.avi", 2)
    res = rfrun("-m", standin, "--ir", long, "--vis", short, "-o", tmp_path / "f.avi", "-q")
    assert res.exit_code == 0, res.output
    assert "source b (" in res.output and "short.avi) ran out after 2 frame(s)" in res.output
    assert "4 frame(s) of source a (" in res.output and "long.avi) were not used" in res.output
    res = rfrun("-m", standin, "--ir", short, "--vis", long, "-o", tmp_path / "g.avi", "-q")
    assert "source a (" in res.output and "4 frame(s) of source b (" in res.output
    res = rfrun("-m", standin, "--ir", long, "--vis", long, "-o", tmp_path / "h.avi", "-q")
    assert res.exit_code == 0 and "ran out" not in res.output


# -- 4. progress and task roles -------------------------------------------------------------------
def test_fps_meter_gives_slow_frames_their_rate() -> None:
    meter = FpsMeter(span_s=1.0)
    assert meter.tick(0.0) == 0.0 and not meter.ready
    assert meter.tick(2.0) == pytest.approx(0.5) and meter.ready
    assert meter.tick(3.6) == pytest.approx(1 / 1.6)
    fast = FpsMeter(span_s=1.0)
    rates = [fast.tick(t / 20) for t in range(41)]
    assert rates[-1] == pytest.approx(20.0)


def test_progress_shows_the_latest_rate_on_every_frame(monkeypatch) -> None:
    import io

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    rep = TqdmProgress()
    rep.start(10, 0, "test")
    rep.step({"frames": 1, "postfix": "  -- FPS  latency 0 ms"})
    rep.step({"frames": 2, "postfix": " 0.62 FPS  latency 1600 ms"})
    assert "0.62 FPS" in str(rep.bar.postfix)  # before: only frames 1, 6, 11 ... updated it (frame 1: 0.0 FPS)
    rep.close()


def test_model_of_another_task_warns(tmp_path: Path, standin: Path) -> None:
    a, b = image(tmp_path / "a.png"), image(tmp_path / "b.png", 30)
    res = rfrun("-m", standin, "--func", a, "--mri", b, "-o", tmp_path / "m.png", "-q")
    assert res.exit_code == 0, res.output
    assert "warning: the model was trained for ivif" in res.output and "--func/--mri (mif)" in res.output
    res = rfrun("-m", standin, "--ir", a, "--vis", b, "-o", tmp_path / "i.png", "-q")
    assert res.exit_code == 0 and "trained for" not in res.output


def test_the_source_options_pick_the_bundled_model_of_their_task(tmp_path: Path, monkeypatch) -> None:
    from refusion.runtime import pipeline

    models = tmp_path / "models"
    models.mkdir()
    for task, roles in (("ivif", ["ir", "vis"]), ("mif", ["a", "b"]), ("mfif", ["near", "far"])):
        card = {"task": task, "sources": roles, "model_config": {}, "normalisation": "minmax",
                "colour": "ycrcb-eq15", "provenance": {"kind": "test-standin"}}
        build_standin_colour_onnx(models / f"{task}.colour.onnx", card=card)
    monkeypatch.setattr(pipeline, "MODELS_DIR", models)
    a, b = image(tmp_path / "a.png"), image(tmp_path / "b.png", 30)
    for opts, used in ((("--func", "--mri"), "mif"), (("--near", "--far"), "mfif"), (("--ir", "--vis"), "ivif"),
                       (("--a", "--b"), "ivif")):
        res = rfrun(opts[0], a, opts[1], b, "-o", tmp_path / f"{used}{opts[0]}.png", "-v")
        assert res.exit_code == 0, res.output
        assert f"model {models / (used + '.colour.onnx')}" in res.output and "warning" not in res.output
    # --task chooses without the role options; a task whose model is not bundled says so
    res = rfrun("--task", "mfif", "--a", a, "--b", b, "-o", tmp_path / "t.png", "-v")
    assert res.exit_code == 0 and f"model {models / 'mfif.colour.onnx'}" in res.output
    res = rfrun("--under", a, "--over", b, "-o", tmp_path / "u.png")
    assert res.exit_code == 1 and "bundled meif model meif.colour.onnx is missing" in res.output
    # --task and the role options disagree: the model of --task runs, with a warning naming the roles
    res = rfrun("--task", "mif", "--ir", a, "--vis", b, "-o", tmp_path / "w.png")
    assert res.exit_code == 0 and "warning: the model was trained for mif" in res.output
    assert "--ir/--vis (ivif)" in res.output
    # an explicit model of another task than --task: a warning too
    res = rfrun("--task", "mfif", "-m", models / "mif.colour.onnx", "--a", a, "--b", b, "-o", tmp_path / "x.png")
    assert res.exit_code == 0 and "trained for mif" in res.output and "--task mfif (mfif)" in res.output
