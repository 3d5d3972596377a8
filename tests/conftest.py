"""Shared fixtures: paths to ../shared (skipped with a reason when absent), device probes."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("REFUSION_SHARED", REPO.parent / "shared"))
OFFICIAL = SHARED / "reference" / "official"
DATA = SHARED / "data"

# Official test cases: task -> (folder of a, folder of b, names)
OFFICIAL_CASES = {
    "IVIF": ("infrared", "visible", ("00710N.png", "00906N.png")),
    "MIF": ("CT_PET_SPECT", "MRI", ("MRI_PET_14.png", "MRI_PET_37.png")),
    "MFIF": ("near", "far", ("5.jpg", "14.jpg")),
    "MEIF": ("under", "over", ("AirBellowsGap.png", "ICCV_03.png")),
}


@pytest.fixture(scope="session")
def official() -> Path:
    if not (OFFICIAL / "ReFusion_IVIF.pth").is_file():
        pytest.skip(f"authors' reference files not found at {OFFICIAL} (set REFUSION_SHARED)")
    return OFFICIAL


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "manifest.json").is_file():
        pytest.skip(f"shared data not found at {DATA} (set REFUSION_SHARED)")
    return DATA


def cuda_device_count() -> int:
    """GPUs visible to torch, 0 without torch or CUDA (never constructs TensorRT objects)."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def pytest_collection_modifyitems(config, items):
    has_gpu = cuda_device_count() > 0
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs an NVIDIA GPU with CUDA; none found"))
        if "slow" in item.keywords and not config.getoption("-m"):
            item.add_marker(pytest.mark.skip(reason="slow test: run with -m slow"))


@pytest.fixture
def torch_one_thread():
    """Run a test with one torch thread: on the shared 2-core machine one thread is ~10x faster than two."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
