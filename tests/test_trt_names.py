"""Every TensorRT name our code calls exists in the real bindings of TensorRT 10.x and 11.x.

No GPU and no TensorRT libraries are needed: the bindings wheels are real wheels (zip
files), and the Python names they bind are stored as C strings in their extension
module. Nothing is imported from them and nothing is constructed (without a GPU,
constructing a TensorRT object can crash the process).

The wheels are taken from ``$REFUSION_TRT_WHEELS`` when set (CI pre-downloads them),
else downloaded once with ``pip download --no-deps`` into pytest's cache; the tests
skip with the reason when neither works (no network).
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from refusion.export.tensorrt_build import RTX_BUILD_NAMES, TRT_BUILD_NAMES
from refusion.export.trt_network import TRT_NETWORK_NAMES
from refusion.runtime.backends.tensorrt import TRT_API_NAMES

#: (package, version, TensorRT major) checked. 10.13 = the last 10.x on cu12 wheels here, 11.4 = current.
WHEELS = (
    ("tensorrt-cu12-bindings", "10.13.3.9"),
    ("tensorrt-lean-cu12-bindings", "10.13.3.9"),
    ("tensorrt-cu13-bindings", "11.4.0.106"),
    ("tensorrt-lean-cu13-bindings", "11.4.0.106"),
)

#: Names TensorRT removed or that were never ours to use: the string check must not find them where absent.
REMOVED_IN_11 = ("FP16", "EXPLICIT_BATCH", "platform_has_fast_fp16")


def _wheel_file(folder: Path, package: str, version: str) -> Path | None:
    stem = package.replace("-", "_") + "-" + version + "-"
    found = sorted(folder.glob(stem + "*.whl"))
    return found[0] if found else None


@pytest.fixture(scope="module")
def wheels(request, tmp_path_factory) -> dict[str, Path]:
    env = os.environ.get("REFUSION_TRT_WHEELS")
    cache = getattr(request.config, "cache", None)
    if env:
        folder = Path(env)
    elif cache is not None:
        folder = Path(cache.mkdir("trt-wheels"))
    else:
        folder = tmp_path_factory.mktemp("trt-wheels")
    out: dict[str, Path] = {}
    missing = [(p, v) for p, v in WHEELS if _wheel_file(folder, p, v) is None]
    if missing and not env:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(folder)]
        cmd += [f"{p}=={v}" for p, v in missing]
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=300)
        except (subprocess.SubprocessError, OSError) as exc:
            pytest.skip(f"TensorRT bindings wheels not available (no network?): {exc}")
    for p, v in WHEELS:
        w = _wheel_file(folder, p, v)
        if w is None:
            pytest.skip(f"{p}=={v} wheel not found in {folder}")
        out[f"{p}=={v}"] = w
    return out


def _extension_bytes(wheel: Path) -> tuple[bytes, bytes]:
    """(extension module bytes, package __init__.py bytes) of a bindings wheel."""
    with zipfile.ZipFile(wheel) as z:
        so = [n for n in z.namelist() if n.endswith(".so") and "/" in n and n.count("/") == 1]
        assert so, f"no extension module in {wheel.name}"
        return z.read(so[0]), z.read(so[0].rsplit("/", 1)[0] + "/__init__.py")


def _has(name: str, so: bytes, init: bytes) -> bool:
    """The name is a C string in the module (possibly tail-merged by the linker), or set in __init__.py."""
    if name == "__version__":
        return b"__version__ =" in init
    return name.encode() + b"\0" in so


@pytest.mark.parametrize("package", [f"{p}=={v}" for p, v in WHEELS if "lean" not in p])
def test_builder_names_in_full_bindings(wheels, package):
    so, init = _extension_bytes(wheels[package])
    missing = [n for n in TRT_BUILD_NAMES + TRT_NETWORK_NAMES + TRT_API_NAMES if not _has(n, so, init)]
    assert not missing, f"{package} lacks {missing}"


@pytest.mark.parametrize("package", [f"{p}=={v}" for p, v in WHEELS if "lean" in p])
def test_runtime_names_in_lean_bindings(wheels, package):
    so, init = _extension_bytes(wheels[package])
    missing = [n for n in TRT_API_NAMES if not _has(n, so, init)]
    assert not missing, f"{package} lacks {missing}"
    assert not _has("OnnxParser", so, init)  # the lean runtime cannot build: the check discriminates


def test_removed_names_absent_in_11(wheels):
    """The check can fail: names TensorRT 11 removed are found in 10.x and not in 11.x, and we use none of them."""
    so10, init10 = _extension_bytes(wheels["tensorrt-cu12-bindings==10.13.3.9"])
    so11, init11 = _extension_bytes(wheels["tensorrt-cu13-bindings==11.4.0.106"])
    for name in REMOVED_IN_11:
        assert _has(name, so10, init10) and not _has(name, so11, init11), name
        assert name not in TRT_BUILD_NAMES + TRT_NETWORK_NAMES + TRT_API_NAMES
    assert not _has("execute_async_v2", so10, init10)  # removed in 10.0


@pytest.mark.skipif(importlib.util.find_spec("tensorrt_lean_bindings") is None, reason="tensorrt-lean not installed")
def test_runtime_names_in_installed_lean_module():
    """With tensorrt-lean-cu13-libs + -bindings installed: the names exist as attributes (nothing constructed)."""
    import tensorrt_lean_bindings as trt  # importing needs no GPU; constructing objects could crash

    attrs = set(dir(trt))
    for obj_name in dir(trt):
        obj = getattr(trt, obj_name)
        if isinstance(obj, type):
            attrs.update(dir(obj))
    missing = [n for n in TRT_API_NAMES if n not in attrs]
    assert not missing, f"tensorrt_lean {trt.__version__} lacks {missing}"


def test_name_list_covers_the_builder_code():
    """Every attribute the builder code touches is either ours/stdlib or listed in TRT_BUILD_NAMES / RTX_BUILD_NAMES."""
    import ast
    import dataclasses
    import inspect
    import time

    from refusion.export import tensorrt_build as tb
    from refusion.export import trt_network as tn

    def attrs(*funcs) -> set[str]:
        out: set[str] = set()
        for f in funcs:
            tree = ast.parse(inspect.getsource(f))
            out |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        return out

    ours = set(dir(Path)) | set(dir(str)) | set(dir(dict)) | set(dir(list)) | set(dir(time)) | {"__members__"}
    ours |= {"message"}  # progress.message, refusion.runtime.progress
    ours |= {f.name for c in (tb.EngineConfig, tb.GpuInfo, tb.EngineResult, tb.Flavour) for f in dataclasses.fields(c)}
    ours |= set(dir(tb.Flavour)) | set(dir(tn.NetworkReport)) | {f.name for f in dataclasses.fields(tn.NetworkReport)}
    builder_code = (tb.build_engine, tb._free_plan_path, tb._check_flavour_options, tb._target_text, tb._builder_config,
                    tb._inspect_plan, tb._sidecar_data, tb._set_rtx_targets)
    takes_trt = {f.__name__ for f in vars(tb).values() if inspect.isfunction(f) and f.__module__ == tb.__name__
                 and "trt" in inspect.signature(f).parameters}
    assert takes_trt - {f.__name__ for f in builder_code} <= {"_progress_monitor"}, "add new builder helpers here"
    unlisted = sorted(attrs(*builder_code) - ours - set(TRT_BUILD_NAMES) - set(RTX_BUILD_NAMES))
    assert not unlisted, f"add these TensorRT names to TRT_BUILD_NAMES: {unlisted}"
    ours |= set(dir(tn.ParsedReduce)) | {"__class__"}
    unlisted = sorted(attrs(tn.network_report, tn.parse_onnx) - ours - set(tn.TRT_NETWORK_NAMES))
    assert not unlisted, f"add these TensorRT names to TRT_NETWORK_NAMES: {unlisted}"


@pytest.mark.parametrize("package", [f"{p}=={v}" for p, v in WHEELS if "lean" not in p])
def test_network_check_names_in_full_bindings(wheels, package):
    """The parsed-network check (export/trt_network.py) also works with full TensorRT 10.x and 11.x."""
    from refusion.export.trt_network import TRT_NETWORK_NAMES

    so, init = _extension_bytes(wheels[package])
    missing = [n for n in TRT_NETWORK_NAMES if not _has(n, so, init)]
    assert not missing, f"{package} lacks {missing}"
