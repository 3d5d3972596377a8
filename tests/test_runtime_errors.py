"""Bad input to rfrun: one clear message, the right exit code, no traceback, no half-written output."""
from __future__ import annotations

import types
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

from refusion.runtime import pipeline  # noqa: E402
from refusion.runtime.backends import open_backend  # noqa: E402
from refusion.runtime.cli import cli  # noqa: E402
from refusion.runtime.errors import EngineError, SizeError  # noqa: E402
from refusion.runtime.size import Size  # noqa: E402


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> Path:
    return build_standin_colour_onnx(tmp_path_factory.mktemp("m") / "standin.colour.onnx")


def frames(folder: Path, n: int = 3, h: int = 24, w: int = 32) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((h, w, 3), 40 * i, np.uint8))
    return str(folder)


def rfrun(*args: str):
    res = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in res.output
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit), res.exception
    return res


def no_partials(folder: Path) -> bool:
    return not list(folder.rglob(".*partial*"))


def test_missing_camera(tmp_path: Path, standin: Path) -> None:
    res = rfrun("--ir", "cam97", "--vis", "cam98", "-m", standin, "-o", tmp_path / "x.mp4")
    assert res.exit_code == 1 and "camera 97 cannot be opened" in res.output
    assert not (tmp_path / "x.mp4").exists() and no_partials(tmp_path)


def test_missing_and_corrupt_files(tmp_path: Path, standin: Path) -> None:
    res = rfrun("--ir", tmp_path / "nope.mp4", "--vis", tmp_path / "nope2.mp4", "-m", standin, "-o", tmp_path / "x.mp4")
    assert res.exit_code == 1 and "not found" in res.output
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00not a video" * 50)
    res = rfrun("--ir", bad, "--vis", bad, "-m", standin, "-o", tmp_path / "x.mp4")
    assert res.exit_code == 1 and "corrupt or unsupported format" in res.output
    assert not (tmp_path / "x.mp4").exists() and no_partials(tmp_path)


def test_frame_that_fails_to_decode_is_skipped(tmp_path: Path, standin: Path) -> None:
    a, b = frames(tmp_path / "a", 4), frames(tmp_path / "b", 4)
    (tmp_path / "a" / "002.png").write_bytes(b"\x89PNG\r\n broken")
    res = rfrun("--ir", a, "--vis", b, "-m", standin, "-o", tmp_path / "out.mp4", "-q")
    assert res.exit_code == 0, res.output
    assert "skipped frame 002" in res.output and "frames 3, dropped 0, skipped 1" in res.output


def test_sources_of_different_sizes(tmp_path: Path, standin: Path) -> None:
    a, b = frames(tmp_path / "a", 2, 24, 32), frames(tmp_path / "b", 2, 48, 64)
    res = rfrun("--ir", a, "--vis", b, "-m", standin, "-o", tmp_path / "o1", "-q")
    assert res.exit_code == 0 and "resizing b to 24x32" in res.output
    res = rfrun("--ir", a, "--vis", b, "-m", standin, "-o", tmp_path / "o2.mp4", "--no-resize")
    assert res.exit_code == 1 and "sources differ in size: a is 24x32, b is 48x64" in res.output
    assert not (tmp_path / "o2.mp4").exists() and no_partials(tmp_path)


def test_never_overwrite(tmp_path: Path, standin: Path) -> None:
    a, b = frames(tmp_path / "a", 2), frames(tmp_path / "b", 2)
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    res = rfrun("--ir", a, "--vis", b, "-m", standin, "-o", out)
    assert res.exit_code == 1 and "exists; pass --overwrite" in res.output and out.read_bytes() == b"precious"
    folder = tmp_path / "outdir"
    folder.mkdir()
    (folder / "keep.txt").write_text("x")
    res = rfrun("--ir", a, "--vis", b, "-m", standin, "-o", folder)
    assert res.exit_code == 1 and "not empty" in res.output
    res = rfrun("--ir", a, "--vis", b, "-m", standin, "-o", out, "--overwrite", "-q")
    assert res.exit_code == 0 and out.read_bytes() != b"precious"


def test_one_image_output_for_many_frames(tmp_path: Path, standin: Path) -> None:
    a, b = frames(tmp_path / "a", 3), frames(tmp_path / "b", 3)
    res = rfrun("--ir", a, "--vis", b, "-m", standin, "-o", tmp_path / "one.png")
    assert res.exit_code == 1 and "holds one image" in res.output
    res = rfrun("--ir", Path(a) / "000.png", "--vis", Path(b) / "001.png", "-m", standin, "-o", tmp_path / "one.png")
    assert res.exit_code == 0 and (tmp_path / "one.png").is_file()


def test_frame_size_outside_engine_profile(tmp_path: Path, standin: Path) -> None:
    be = open_backend(standin, "ort-cpu")
    be.size_limits = (Size(64, 64), Size(128, 128))
    out = tmp_path / "x.mp4"
    config = pipeline.RunConfig(a=frames(tmp_path / "a", 2), b=frames(tmp_path / "b", 2), outputs=(out,))
    with pytest.raises(SizeError, match=r"frame size 24x32 \(HxW\) is outside the engine profile 64x64 .. 128x128"):
        pipeline.run(config, backend=be)
    assert not out.exists() and no_partials(tmp_path)


def test_missing_bundled_model(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(pipeline, "MODELS_DIR", tmp_path / "models")
    res = rfrun("--demo", "-o", tmp_path / "d.mp4")
    assert res.exit_code == 1 and "bundled ivif model ivif.colour.onnx is missing" in res.output
    assert "--model" in res.output


def test_core_graph_and_bad_model(tmp_path: Path) -> None:
    core = build_standin_colour_onnx(tmp_path / "m.onnx", graph_kind="core")
    res = rfrun("--demo", "-m", core, "-o", tmp_path / "d.mp4")
    assert res.exit_code == 1 and "colour graph" in res.output
    res = rfrun("--demo", "-m", tmp_path / "missing.onnx", "-o", tmp_path / "d.mp4")
    assert res.exit_code == 1 and "model not found" in res.output


def test_stream_credentials_are_masked(tmp_path: Path, standin: Path) -> None:
    res = rfrun("--ir", "rtsp://admin:s3cret@127.0.0.1:9/live", "--vis", "cam98", "-m", standin,
                "-o", tmp_path / "x.mp4")
    assert res.exit_code == 1 and "rtsp://***@127.0.0.1:9/live" in res.output
    assert "s3cret" not in res.output


def test_usage_errors_exit_2(tmp_path: Path, monkeypatch) -> None:
    from refusion.runtime import cli as rfrun_cli

    monkeypatch.setattr(rfrun_cli, "window_support", lambda: "no display")  # else cameras open a window
    assert rfrun("--ir", "cam0").exit_code == 2
    assert rfrun("--ir", "cam0", "--vis", "cam1").exit_code == 2  # nothing to do
    assert rfrun("--demo", "--size", "12by3").exit_code == 2


# -- TensorRT engine checks, without a GPU: the runtime's wiring around the side-car ------------
def fake_trt_env(monkeypatch, version: str = "10.13.3.9", gpu: str = "NVIDIA H100 80GB HBM3", cc=(9, 0),
                 module: str = "tensorrt"):
    from refusion.runtime.backends import tensorrt as trt_backend

    def runtime_ctor(*a, **k):
        raise AssertionError("a TensorRT object was constructed before the side-car check")

    fake_trt = types.SimpleNamespace(__version__=version, __name__=module, Runtime=runtime_ctor,
                                     Logger=runtime_ctor)
    props = types.SimpleNamespace(name=gpu.encode(), major=cc[0], minor=cc[1])
    fake_cudart = types.SimpleNamespace(
        cudaGetDeviceCount=lambda: (0, 1),
        cudaSetDevice=lambda i: (0,),
        cudaGetDeviceProperties=lambda i: (0, props),
    )
    monkeypatch.setattr(trt_backend, "_cudart", lambda: fake_cudart)
    monkeypatch.setattr(trt_backend, "import_tensorrt", lambda *a, **k: fake_trt)


def write_plan(tmp_path: Path, **sidecar) -> Path:
    from refusion.runtime.sidecar import write_sidecar

    plan = tmp_path / "ivif.plan"
    plan.write_bytes(b"\0" * 64)
    data = {
        "model_card": {"task": "ivif", "sources": ["ir", "vis"]},
        "graph": "colour",
        "precision": "fp16",
        "tensorrt_version": "10.8.0.43",
        "gpu_name": "NVIDIA A100-SXM4-80GB",
        "compute_capability": [8, 0],
        "profile": {"min": [64, 64], "opt": [480, 640], "max": [1080, 1920]},
        "onnx_sha256": "0" * 64,
        "version_compatible": False,
    }
    data.update(sidecar)
    write_sidecar(plan, data)
    return plan


def test_engine_from_another_tensorrt_or_gpu(tmp_path: Path, monkeypatch) -> None:
    fake_trt_env(monkeypatch)
    a, b = frames(tmp_path / "a", 2), frames(tmp_path / "b", 2)
    plan = write_plan(tmp_path)
    res = rfrun("--ir", a, "--vis", b, "-m", plan, "-o", tmp_path / "x.mp4")
    assert res.exit_code == 1 and "built with TensorRT 10.8.0.43" in res.output and "rfexport engine" in res.output
    plan = write_plan(tmp_path, tensorrt_version="10.13.3.9")
    res = rfrun("--ir", a, "--vis", b, "-m", plan, "-o", tmp_path / "x.mp4")
    assert res.exit_code == 1 and "compute capability 8.0" in res.output and "rfexport engine" in res.output
    assert not (tmp_path / "x.mp4").exists() and no_partials(tmp_path)


def test_tensorrt_rtx_plan_checked_before_any_tensorrt_object(tmp_path: Path, monkeypatch) -> None:
    a, b = frames(tmp_path / "a", 2), frames(tmp_path / "b", 2)
    rtx = dict(flavour="tensorrt_rtx", tensorrt_version="1.7.1.116", gpu_name="", compute_capability=[],
               compute_capabilities=["8.6"])
    fake_trt_env(monkeypatch, version="1.7.1.116", gpu="NVIDIA GeForce RTX 4090", cc=(8, 9), module="tensorrt_rtx")
    res = rfrun("--ir", a, "--vis", b, "-m", write_plan(tmp_path, **rtx), "-o", tmp_path / "x.mp4")
    assert res.exit_code == 1 and "tensorrt_rtx engine for compute capability 8.6" in res.output
    assert "--compute-capability 8.9" in res.output and "Traceback" not in res.output
    fake_trt_env(monkeypatch, version="10.13.3.9", gpu="NVIDIA GeForce RTX 4090", cc=(8, 9))
    res = rfrun("--ir", a, "--vis", b, "-m", write_plan(tmp_path, **rtx), "-o", tmp_path / "x.mp4")
    assert res.exit_code == 1 and "built with tensorrt_rtx 1.7.1.116, but this runtime uses tensorrt 10.13.3.9" in res.output
    assert not (tmp_path / "x.mp4").exists() and no_partials(tmp_path)


def test_version_compatible_plan_needs_trust(tmp_path: Path, monkeypatch) -> None:
    fake_trt_env(monkeypatch)
    plan = write_plan(tmp_path, tensorrt_version="10.8.0.43", version_compatible=True,
                      hardware_compatibility="ampere_plus")
    res = rfrun("--ir", frames(tmp_path / "a", 2), "--vis", frames(tmp_path / "b", 2), "-m", plan,
                "-o", tmp_path / "x.mp4")
    assert res.exit_code == 1 and "--trust-engine-code" in res.output


def test_tensorrt_side_car_missing(tmp_path: Path, monkeypatch) -> None:
    fake_trt_env(monkeypatch)
    plan = tmp_path / "lonely.plan"
    plan.write_bytes(b"\0")
    res = rfrun("--demo", "-m", plan, "-o", tmp_path / "d.mp4")
    assert res.exit_code == 1 and "side-car" in res.output


def test_engine_loader_checks_without_a_runner(tmp_path: Path, monkeypatch) -> None:
    """load_engine reads, checks and deserialises a plan without an execution context or a stream."""
    from refusion.runtime.backends import tensorrt as trt_backend

    class FakeEngine:
        num_io_tensors = 5
        names = ("a", "b", "norm_state", "fused", "norm_state_out")

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_mode(self, name):
            return "in" if name in ("a", "b", "norm_state") else "out"

        def get_tensor_profile_shape(self, name, profile):
            return (64, 80, 3), (240, 320, 3), (480, 640, 3)

        def create_execution_context(self, *a):
            raise AssertionError("the loader made an execution context")

    class FakeRuntime:
        def __init__(self, logger):
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, blob):
            return FakeEngine()

    class FakeLogger:
        WARNING = 2

        def __init__(self, level):
            pass

    fake_trt_env(monkeypatch, version="10.8.0.43", gpu="NVIDIA A100-SXM4-80GB", cc=(8, 0))
    fake = trt_backend.import_tensorrt()
    fake.Runtime, fake.Logger = FakeRuntime, FakeLogger
    fake.TensorIOMode = types.SimpleNamespace(INPUT="in")
    loaded = trt_backend.load_engine(write_plan(tmp_path))
    assert loaded.size_limits == (Size(64, 80), Size(480, 640))
    assert loaded.card["sources"] == ["ir", "vis"] and loaded.precision == "fp16" and loaded.flavour == "tensorrt"
    assert loaded.gpu_name == "NVIDIA A100-SXM4-80GB" and loaded.compute_capability == (8, 0)
    FakeEngine.names = ("a", "b", "norm_state", "out", "norm_state_out")
    with pytest.raises(EngineError, match="not a refusion colour-graph engine"):
        trt_backend.load_engine(write_plan(tmp_path))


def test_show_without_gui_support(tmp_path: Path, standin: Path) -> None:
    gui = [line for line in cv2.getBuildInformation().splitlines() if line.strip().startswith("GUI:")]
    if not gui or "NONE" not in gui[0]:
        pytest.skip("this OpenCV has GUI support; the headless message is not reachable")
    res = rfrun("--demo", "--frames", "2", "-m", standin, "--show")
    assert res.exit_code == 1 and "pip install opencv-python" in res.output


def test_checkpoint_given_as_model_says_to_export(tmp_path: Path) -> None:
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"not really a checkpoint")
    res = rfrun("--demo", "-m", ckpt, "-o", tmp_path / "x.mp4")
    assert res.exit_code == 1 and "export it first with `rfexport" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "x.mp4").exists()
