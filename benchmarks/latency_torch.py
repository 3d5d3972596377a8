"""Latency rows of the PyTorch family: eager / compiled / FP16 modules, and rfrun's torch backend."""
from __future__ import annotations

from typing import Any

import numpy as np

from .latency_models import Models, Prepared, Skip, core_inputs, torch_or_skip


def prepare_torch(models: Models, backend: str, graph: str, a: np.ndarray, b: np.ndarray, threads: int) -> Prepared:
    torch = torch_or_skip()
    device = "cuda" if backend.startswith("torch-cuda") else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise Skip("no CUDA device visible to PyTorch (torch.cuda.is_available() is False)")
    if device == "cpu":
        from refusion.runtime.ort_tuning import physical_cores

        torch.set_num_threads(threads or physical_cores())
    half = backend.endswith("fp16")
    module = models.torch_module(graph, half).to(device)
    if backend == "torch-cuda-compiled":
        module = torch.compile(module)
    if graph == "core":
        ya, yb = core_inputs(a, b)
        xa, xb = torch.from_numpy(ya).to(device), torch.from_numpy(yb).to(device)

        def step() -> Any:
            with torch.inference_mode():
                return module(xa, xb)

        fetch = lambda out: out.float().cpu().numpy()[0, 0]  # noqa: E731
    else:
        state = torch.zeros(3, device=device)

        def step() -> Any:
            with torch.inference_mode():
                fused, _ = module(torch.from_numpy(a).to(device), torch.from_numpy(b).to(device), state)
                return fused.cpu()  # host out, like rfrun

        fetch = lambda out: out.numpy()  # noqa: E731
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    notes = "inputs on device" if graph == "core" else "host uint8 in/out"
    if device == "cpu":
        notes += f", {torch.get_num_threads()} threads"
    return Prepared(step, fetch, sync, notes=notes)


def prepare_torch_backend(models: Models, backend: str, graph: str, a: np.ndarray, b: np.ndarray, threads: int) -> Prepared:
    """rfrun's torch backend: colour rows through ``infer`` (host uint8 in/out, like rfrun); core rows
    run F alone on device-resident inputs (CUDA graph on a GPU), like the other torch core rows."""
    torch = torch_or_skip()
    device = "cuda" if backend.endswith("cuda") else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise Skip("no CUDA device visible to PyTorch (torch.cuda.is_available() is False)")
    from refusion.runtime.backends.torch_backend import TorchBackend

    if device == "cpu":
        from refusion.runtime.ort_tuning import physical_cores

        threads = threads or physical_cores()
    be = TorchBackend(models.config.model, device=device, task=models.config.task, threads=threads).open()
    notes = be.describe() + (f", {torch.get_num_threads()} threads" if device == "cpu" else "")
    if graph == "core":
        ya, yb = core_inputs(a, b)
        step, sync = be.core_runner(ya[0, 0], yb[0, 0])
        return Prepared(step, lambda out: out.float().cpu().numpy()[0, 0], sync, close=be.close,
                        notes=notes + ", inputs on device")
    state = np.zeros(3, np.float32)
    return Prepared(lambda: be.infer(a, b, state)[0].copy(), lambda out: out, close=be.close,
                    notes=notes + ", host uint8 in/out")
