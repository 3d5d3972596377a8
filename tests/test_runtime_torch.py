"""The torch backend of rfrun: parity with the ORT colour graph and with runtime/colour.py, errors, CUDA.

On the CPU it runs FP32 without CUDA graphs; the ``gpu`` tests cover FP16 with the float32
islands, CUDA graphs and pinned buffers where a GPU is present.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from refusion.runtime import colour  # noqa: E402
from refusion.runtime.backends import open_backend  # noqa: E402
from refusion.runtime.backends.torch_backend import TorchBackend, resolve_checkpoint  # noqa: E402
from refusion.runtime.errors import EngineError  # noqa: E402
from refusion.runtime.pipeline import DEFAULT_MODEL, Fuser, bundled_model  # noqa: E402
from refusion.runtime.tasks import TASK_SOURCES, TASKS  # noqa: E402

#: Most uint8 levels the torch backend may differ from the reference, per comparison.
TOL_LEVELS = {"ort_fp32": 1, "numpy_fp32": 1, "fp16_vs_fp32": 2}
MSRS_NAMES = ("00004N.png", "00008N.png", "00012N.png")


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    import cv2

    return np.ascontiguousarray(cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA))


@pytest.fixture(scope="module")
def msrs_pairs(data_dir: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """Three consecutive real MSRS test pairs (IR, visible), uint8 BGR 480x640."""
    from refusion.runtime.imageio import read_image

    root = data_dir / "ivif" / "MSRS" / "test"
    if not (root / "ir" / MSRS_NAMES[0]).is_file():
        pytest.skip(f"MSRS test pairs not found under {root} (set REFUSION_SHARED)")
    return [(read_image(root / "ir" / n), read_image(root / "vis" / n)) for n in MSRS_NAMES]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from refusion.train.checkpoint import save_checkpoint
    from refusion.train.networks import FusionConfig, FusionNet

    torch.manual_seed(0)
    net = FusionNet()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    return save_checkpoint(path, {"fusion": net.state_dict(), "task": "ivif", "model_config": FusionConfig().to_dict()})


def _levels(x: np.ndarray, y: np.ndarray) -> int:
    return int(np.abs(x.astype(np.int16) - y.astype(np.int16)).max())


@pytest.mark.parametrize("task", TASKS)
def test_bundled_onnx_maps_to_the_checkpoint_it_was_exported_from(task: str) -> None:
    """Every task has its bundled colour ONNX, its card names the task and roles, and it was exported from the
    bundled checkpoint of that task (same file name and sha256)."""
    ort = pytest.importorskip("onnxruntime")
    from refusion.runtime.card import read_onnx_metadata

    model = bundled_model(task)
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    card = read_onnx_metadata(sess.get_modelmeta().custom_metadata_map).card
    assert card.task == task and tuple(card.sources) == TASK_SOURCES[task]
    ckpt = resolve_checkpoint(model)
    assert ckpt.name == card.provenance.checkpoint_name == f"{task}.pt"
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() == card.provenance.checkpoint_sha256
    assert model.with_name(f"{task}.onnx").is_file()  # the core graph, for rfexport --fp16 and engines


def test_matches_ort_colour_graph_on_real_pairs(msrs_pairs, torch_one_thread) -> None:
    """Bundled model, real MSRS frames: every normalisation mode, the EMA state carried over 3 frames."""
    pytest.importorskip("onnxruntime")
    h, w = 120, 160
    frames = [(_resize(a, h, w), _resize(b, h, w)) for a, b in msrs_pairs]
    with open_backend(DEFAULT_MODEL, "torch") as tb, open_backend(DEFAULT_MODEL, "ort-cpu") as ob:
        assert tb.name == "torch" and tb.device == "cpu" and tb.precision == "fp32"
        assert tb.sources == ob.sources == ("ir", "vis")
        for mode in ("minmax", "ema", "none"):
            ft, fo = Fuser(tb, mode, 0.6), Fuser(ob, mode, 0.6)
            for a, b in frames:
                out_t, out_o = ft(a, b), fo(a, b)
                assert out_t.shape == (h, w, 3) and out_t.dtype == np.uint8
                assert _levels(out_t, out_o) <= TOL_LEVELS["ort_fp32"], mode
                np.testing.assert_allclose(ft.state, fo.state, rtol=1e-4, atol=1e-5)
            assert np.ptp(out_t) > 50  # a real image came out, not a flat one


def test_matches_ort_at_240x320(msrs_pairs, torch_one_thread) -> None:
    pytest.importorskip("onnxruntime")
    a, b = (_resize(x, 240, 320) for x in msrs_pairs[0])
    state = np.zeros(3, np.float32)
    with open_backend(DEFAULT_MODEL, "torch") as tb, open_backend(DEFAULT_MODEL, "ort-cpu") as ob:
        (ft, st), (fo, so) = (x.copy() for x in tb.infer(a, b, state)), ob.infer(a, b, state)
    assert _levels(ft, fo) <= TOL_LEVELS["ort_fp32"]
    assert (ft != fo).mean() < 1e-3
    np.testing.assert_allclose(st, so, rtol=1e-4, atol=1e-5)


def _numpy_reference(net, a: np.ndarray, b: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """runtime/colour.py around F's raw output (torch FP32): the contract of the colour graph."""
    from refusion.train.fuse import run_fusion, to_uint8

    fa, fb = (colour.bgr_to_ycrcb(x.astype(np.float32) / 255.0) for x in (a, b))
    raw = run_fusion(net, fa[..., 0], fb[..., 0])
    lo_s, hi_s, al = (float(v) for v in state)
    lo = al * lo_s + (1 - al) * float(raw.min())
    hi = al * hi_s + (1 - al) * float(raw.max())
    y = np.clip((raw - lo) / max(hi - lo, 1e-6), 0, 1)
    cr = colour.fuse_chroma(fa[..., 1], fb[..., 1], colour.TAU_FLOAT)
    cb = colour.fuse_chroma(fa[..., 2], fb[..., 2], colour.TAU_FLOAT)
    bgr = colour.ycrcb_to_bgr(np.stack([y, cr, cb], -1).astype(np.float32))
    return to_uint8(bgr * 255.0), np.array([lo, hi, al], np.float32)


def test_matches_runtime_colour_reference(msrs_pairs, torch_one_thread) -> None:
    from refusion.train.checkpoint import load_fusion_model

    a, b = (_resize(x, 96, 128) for x in msrs_pairs[1])
    with open_backend(DEFAULT_MODEL, "torch") as tb:
        net = load_fusion_model(tb.checkpoint).net
        for state in ([0, 0, 0], [0.05, 0.8, 0.9], [0, 1, 1]):
            st = np.array(state, np.float32)
            fused, st_out = tb.infer(a, b, st)
            ref, ref_st = _numpy_reference(net, a, b, st)
            assert _levels(fused, ref) <= TOL_LEVELS["numpy_fp32"], state
            np.testing.assert_allclose(st_out, ref_st, rtol=1e-5, atol=1e-6)


def test_grey_source_keeps_the_colour_sources_chroma(tiny_checkpoint, torch_one_thread) -> None:
    rng = np.random.default_rng(1)
    a = np.repeat(rng.integers(0, 256, (32, 40, 1), dtype=np.uint8), 3, axis=2)
    b = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    with TorchBackend(tiny_checkpoint, device="cpu").open() as be:
        fused, _ = be.infer(a, b, np.zeros(3, np.float32))
        fused = fused.copy()
    cr_b = colour.bgr_to_ycrcb(b)[..., 1].astype(int)
    cr_f = colour.bgr_to_ycrcb(fused)[..., 1].astype(int)
    # luma differs, so uint8 rounding moves Cr a little; a wrong chroma formula moves it by far more
    assert np.abs(cr_f - cr_b)[np.abs(cr_b - 128) > 20].mean() < 6


def test_fp16_islands_path_on_cpu(tiny_checkpoint, torch_one_thread) -> None:
    """The FP16 path (CUDA's default) runs on the CPU too when asked: within 2 levels of FP32."""
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    state = np.zeros(3, np.float32)
    with TorchBackend(tiny_checkpoint, device="cpu", precision="fp16").open() as half, \
            TorchBackend(tiny_checkpoint, device="cpu").open() as full:
        assert half.precision == "fp16" and next(half._net.parameters()).dtype == torch.float16
        f16, s16 = (x.copy() for x in half.infer(a, b, state))
        f32, s32 = full.infer(a, b, state)
    assert f16.dtype == np.uint8 and s16.dtype == np.float32
    assert _levels(f16, f32) <= TOL_LEVELS["fp16_vs_fp32"]
    np.testing.assert_allclose(s16, s32, atol=5e-3)


def test_frame_sizes_cached_up_to_a_limit(tiny_checkpoint, torch_one_thread) -> None:
    from refusion.runtime.backends.torch_backend import MAX_CACHED_SIZES

    rng = np.random.default_rng(7)
    with TorchBackend(tiny_checkpoint, device="cpu").open() as be:
        shapes = [(16 + 2 * i, 20, 3) for i in range(MAX_CACHED_SIZES + 2)]
        for shape in shapes:
            a, b = (rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(2))
            assert be.infer(a, b, np.zeros(3, np.float32))[0].shape == shape
        assert list(be._steps) == shapes[-MAX_CACHED_SIZES:]  # the oldest sizes were dropped


def test_checkpoint_resolution_and_errors(tmp_path: Path, tiny_checkpoint) -> None:
    onnx = tmp_path / "mine.colour.onnx"
    onnx.write_bytes(b"not used")
    with pytest.raises(EngineError, match="MODEL.pt"):
        resolve_checkpoint(onnx)
    beside = tmp_path / "mine.pt"
    beside.write_bytes(tiny_checkpoint.read_bytes())
    assert resolve_checkpoint(onnx) == beside
    assert resolve_checkpoint(tmp_path / "mine.colour.fp16.onnx") == beside
    with pytest.raises(EngineError, match="not found"):
        resolve_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(EngineError, match="checkpoint"):
        resolve_checkpoint(tmp_path / "m.plan")
    # other backends still refuse a checkpoint, and now name --backend torch
    with pytest.raises(EngineError, match="--backend torch"):
        open_backend(tiny_checkpoint, "ort-cpu")
    with pytest.raises(ValueError):
        TorchBackend(tiny_checkpoint, device="tpu")


def test_cuda_requested_without_gpu_is_a_clear_error(tiny_checkpoint) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(EngineError, match="sees no GPU"):
        TorchBackend(tiny_checkpoint, device="cuda").open()
    with open_backend(tiny_checkpoint, "torch") as be:  # auto: CPU, with a warning
        assert be.device == "cpu" and any("CPU" in w for w in be.warnings)
        assert be.describe() == "torch (cpu, fp32)"


def test_rfrun_pipeline_with_torch_backend(tmp_path: Path, tiny_checkpoint, torch_one_thread) -> None:
    import cv2

    from refusion.runtime.pipeline import RunConfig, run

    rng = np.random.default_rng(3)
    for sub in ("ir", "vis"):
        (tmp_path / sub).mkdir()
        for i in range(2):
            cv2.imwrite(str(tmp_path / sub / f"{i:03d}.png"), rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    out = tmp_path / "out"
    summary = run(RunConfig(a=str(tmp_path / "ir"), b=str(tmp_path / "vis"), model=tiny_checkpoint, backend="torch",
                            outputs=(out,)))
    assert summary.frames == 2 and summary.backend.startswith("torch (cpu")
    assert sorted(p.name for p in out.iterdir()) == ["000.png", "001.png"]


# ----------------------------------------------------------------------------- GPU
# On the bundled (trained) model with a structured pair: a random network's output spans so little that the
# min-max normalisation would magnify FP16 rounding far beyond what a real model shows.

BUNDLED = Path(__file__).resolve().parents[1] / "train" / "models" / "ivif.pt"


def _structured(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from refusion.export.onnx_export import synthetic_pair

    return synthetic_pair(h, w, seed)


@pytest.mark.gpu
def test_cuda_fp16_graphs_match_cpu_fp32() -> None:
    sizes = ((480, 640), (96, 128), (480, 640))  # a size seen before reuses its graph
    with TorchBackend(BUNDLED, device="cuda").open() as gpu, TorchBackend(BUNDLED, device="cpu").open() as cpu:
        assert gpu.precision == "fp16" and "CUDA graphs" in gpu.describe()
        for i, (h, w) in enumerate(sizes):
            a, b = _structured(h, w, seed=i)
            for state in ([0, 0, 0], [0.1, 0.9, 0.9]):
                st = np.array(state, np.float32)
                fg, sg = (x.copy() for x in gpu.infer(a, b, st))
                fc, sc = cpu.infer(a, b, st)
                assert _levels(fg, fc) <= TOL_LEVELS["fp16_vs_fp32"], (h, w, state)
                np.testing.assert_allclose(sg, sc, atol=5e-3)
        assert len(gpu._steps) == 2 and not gpu.warnings


@pytest.mark.gpu
def test_cuda_graph_replay_follows_new_inputs() -> None:
    a, b = _structured(240, 320)
    st = np.array([0.1, 0.9, 0.5], np.float32)
    with TorchBackend(BUNDLED, device="cuda").open() as g, \
            TorchBackend(BUNDLED, device="cuda", cuda_graphs=False).open() as e:
        assert "CUDA graphs" not in e.describe()
        outs = []
        for _ in range(3):  # each replay must see the new frame (a is mirrored every time)
            fg, sg = (x.copy() for x in g.infer(a, b, st))
            fe, se = e.infer(a, b, st)
            assert _levels(fg, fe) <= 1
            np.testing.assert_allclose(sg, se, atol=1e-5)
            outs.append(fg)
            a = np.ascontiguousarray(a[:, ::-1])
        assert _levels(outs[0], outs[1]) > 10 and _levels(outs[0], outs[2]) <= 1


@pytest.mark.gpu
def test_cuda_fp32_matches_cpu() -> None:
    a, b = _structured(120, 160)
    st = np.zeros(3, np.float32)
    with TorchBackend(BUNDLED, device="cuda", precision="fp32").open() as g, \
            TorchBackend(BUNDLED, device="cpu").open() as c:
        fg = g.infer(a, b, st)[0].copy()
        assert _levels(fg, c.infer(a, b, st)[0]) <= TOL_LEVELS["ort_fp32"]
