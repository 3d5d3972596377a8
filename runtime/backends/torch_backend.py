"""PyTorch backend: F and the colour pipeline in torch, for a CUDA build of torch without TensorRT.

It runs what the colour ONNX graph runs (``refusion.export.graphs.ColourGraph``), op for
op: uint8 BGR frames -> OpenCV float YCrCb -> F on the two Y planes -> output
normalisation (minmax / ema / none through ``norm_state``) -> Eq. 15 chroma -> uint8 BGR.

- CUDA: F in float16 with the float32 islands of the export contract (the q/k L2
  normalisations, see ``l2_normalize_spatial`` in ``refusion.train.networks``; the
  min/max over H*W and all colour arithmetic run on the float32 cast of F's output),
  one CUDA graph per frame size, pinned host buffers and one stream, so the host only
  copies frames in and out.
- CPU: float32, no CUDA graph, no pinned buffers; everything else the same.

Dependency direction: ``refusion.runtime`` never imports torch at import time. This
module imports torch, and the checkpoint loader of ``refusion.train`` (which owns F and
the checkpoint formats), only inside :meth:`TorchBackend.open`: the one place where the
runtime reaches up into ``train``, lazily, so a runtime-only install is unaffected.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import colour as C
from .._deps import require
from ..card import ModelCard, Provenance
from ..errors import EngineError
from ..tasks import TASK_SOURCES, TASKS
from .base import Backend

log = logging.getLogger(__name__)

DEVICES = ("auto", "cuda", "cpu")
PRECISIONS = ("auto", "fp16", "fp32")
#: Floor of the normalisation denominator (the colour graph's contract: max(hi' - lo', 1e-6)).
NORM_EPS = 1e-6
#: The bundled colour ONNX of each task -> the bundled checkpoint it was exported from (its model card's
#: provenance names the file and its sha256; a test checks they still match).
BUNDLED_CHECKPOINTS = {f"{task}.colour.onnx": f"{task}.pt" for task in TASKS}
#: Untimed eager runs on the capture stream before a CUDA graph is captured (cuDNN/cuBLAS set-up).
GRAPH_WARMUP = 3
#: Frame sizes whose buffers (and CUDA graph, with its memory pool) are kept; the oldest goes first.
#: A stream has one size; a folder of stills of many sizes must not grow GPU memory without bound.
MAX_CACHED_SIZES = 4

Step = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def bundled_checkpoint_dir() -> Path | None:
    """Folder of the checkpoints shipped with ``refusion.train`` (found without importing it)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("refusion.train")
    except ImportError:
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def resolve_checkpoint(model: Path) -> Path:
    """The checkpoint to load for ``model``: a ``.pt``/``.pth`` as given; for a colour ONNX the
    checkpoint it was exported from (``<stem>.pt`` beside it, or the bundled model's checkpoint).

    Raises EngineError saying what to pass when there is none.
    """
    if model.suffix.lower() in (".pt", ".pth"):
        if not model.is_file():
            raise EngineError(f"model not found: {model}")
        return model
    if model.suffix.lower() == ".onnx":
        stem = model.name[: -len(".onnx")]
        for tail in (".fp16", ".colour"):
            stem = stem[: -len(tail)] if stem.endswith(tail) else stem
        candidates = [model.with_name(stem + ext) for ext in (".pt", ".pth")]
        bundled = bundled_checkpoint_dir()
        if model.name in BUNDLED_CHECKPOINTS and bundled is not None:
            candidates.append(bundled / BUNDLED_CHECKPOINTS[model.name])
        for c in candidates:
            if c.is_file():
                return c
        raise EngineError(
            f"--backend torch runs a PyTorch checkpoint; no checkpoint found for {model.name} "
            f"(looked for {', '.join(c.name for c in candidates)}): pass -m MODEL.pt"
        )
    raise EngineError(f"--backend torch runs a PyTorch checkpoint (.pt or the authors' .pth), not {model.name}")


def bgr_to_ycrcb(img: Any) -> tuple[Any, Any, Any]:
    """uint8 BGR tensor (H, W, 3) -> float32 Y, Cr, Cb (H, W): OpenCV's float formulas on BGR/255."""
    import torch

    f = img.to(torch.float32) / 255.0
    b, g, r = f[..., 0], f[..., 1], f[..., 2]
    y = C.Y_R * r + C.Y_G * g + C.Y_B * b
    cr = (r - y) * C.CR_SCALE + C.TAU_FLOAT
    cb = (b - y) * C.CB_SCALE + C.TAU_FLOAT
    return y, cr, cb


def fuse_chroma(c_a: Any, c_b: Any) -> Any:
    """Eq. 15 on float32 chroma tensors in [0, 1] (``refusion.runtime.colour.fuse_chroma``, tau 0.5)."""
    da, db = c_a - C.TAU_FLOAT, c_b - C.TAU_FLOAT
    wa, wb = da.abs(), db.abs()
    return C.TAU_FLOAT + (da * wa + db * wb) / (wa + wb + C.CHROMA_EPS)


def colour_forward(net: Any, a: Any, b: Any, norm_state: Any, half: bool) -> tuple[Any, Any]:
    """The colour graph on tensors of one device.

    a, b: uint8 (H, W, 3) BGR; norm_state: float32 (3,) = (lo, hi, alpha). Returns fused
    uint8 (H, W, 3) BGR and norm_state_out float32 (3,) = (lo', hi', alpha), lo' = alpha*lo +
    (1-alpha)*min(raw) (hi' likewise with max). ``half``: ``net`` is a ``.half()`` copy; F's
    input is cast to float16 and its output back to float32 before any reduction over H*W.
    """
    import torch

    ya, cra, cba = bgr_to_ycrcb(a)
    yb, crb, cbb = bgr_to_ycrcb(b)
    x = torch.stack([ya, yb], dim=0).unsqueeze(0)
    if half:
        x = x.to(torch.float16)
    raw = net(x)[0, 0].to(torch.float32)
    lo, hi, alpha = norm_state[0], norm_state[1], norm_state[2]
    lo2 = alpha * lo + (1.0 - alpha) * raw.min()
    hi2 = alpha * hi + (1.0 - alpha) * raw.max()
    y = torch.clamp((raw - lo2) / torch.clamp(hi2 - lo2, min=NORM_EPS), 0.0, 1.0)
    cr = fuse_chroma(cra, crb) - C.TAU_FLOAT
    cb = fuse_chroma(cba, cbb) - C.TAU_FLOAT
    bgr = torch.stack([y + C.B_CB * cb, y + C.G_CR * cr + C.G_CB * cb, y + C.R_CR * cr], dim=-1) * 255.0
    fused = torch.floor(torch.clamp(bgr, 0.0, 255.0) + 0.5).to(torch.uint8)
    return fused, torch.stack([lo2, hi2, alpha])


class TorchBackend(Backend):
    """Runs F from a checkpoint with PyTorch, colour pipeline included.

    model: our checkpoint (``.pt``), an authors' ``.pth`` (give ``task``), or a colour ONNX
    whose checkpoint sits beside it (the bundled model's is found in ``refusion.train``).
    device: "auto" (CUDA when torch sees a GPU, else CPU with a warning), "cuda" or "cpu".
    precision: "auto" (fp16 on CUDA, fp32 on CPU), "fp16" or "fp32". cuda_graphs: capture
    one CUDA graph per frame size (CUDA only; falls back to eager with a warning).
    """

    name = "torch"

    def __init__(
        self,
        model: str | Path,
        device: str = "auto",
        precision: str = "auto",
        cuda_graphs: bool = True,
        task: str | None = None,
        threads: int = 0,
        device_id: int = 0,
    ) -> None:
        super().__init__(model)
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, not {device!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        self.requested, self.requested_precision = device, precision
        self.use_graphs = cuda_graphs
        self.task_hint, self.threads, self.device_id = task, threads, device_id
        self.checkpoint: Path | None = None
        self._torch: Any = None
        self._net: Any = None
        self._half = False
        self._stream: Any = None
        self._steps: dict[tuple[int, ...], Step] = {}
        self._keep: dict[tuple, Any] = {}  # per size: graph and buffers, referenced while in use

    # ------------------------------------------------------------------ open / close

    def open(self) -> "TorchBackend":
        torch = require("torch", "the PyTorch backend (--backend torch)")
        self._torch = torch
        self.checkpoint = resolve_checkpoint(self.model)
        # runtime -> train, lazily (see the module docstring): F and its checkpoint formats live there.
        from refusion.train.checkpoint import load_fusion_model

        loaded = load_fusion_model(self.checkpoint, self.task_hint)
        self.device = self._choose_device(torch)
        precision = self.requested_precision
        if precision == "auto":
            precision = "fp16" if self.device == "cuda" else "fp32"
        self.precision, self._half = precision, precision == "fp16"
        if self.device == "cpu" and self.threads:
            torch.set_num_threads(self.threads)
        net = loaded.net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        dev = torch.device("cuda", self.device_id) if self.device == "cuda" else torch.device("cpu")
        net = net.to(dev)
        self._net = net.half() if self._half else net
        if self.device == "cuda":
            self._stream = torch.cuda.Stream(device=dev)
        self.card = _card(loaded)
        self._open = True
        return self

    def _choose_device(self, torch: Any) -> str:
        has_cuda = torch.cuda.is_available()
        if self.requested == "cuda" and not has_cuda:
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise EngineError(
                f"requested the torch backend on CUDA, but torch {torch.__version__} ({build}) sees no GPU; "
                "install a CUDA build of torch, or run on the CPU (slow) / with --backend ort"
            )
        if self.requested == "auto" and not has_cuda:
            self.warnings.append("torch sees no CUDA device: the torch backend runs FP32 on the CPU (slow)")
        return "cuda" if self.requested != "cpu" and has_cuda else "cpu"

    def close(self) -> None:
        if self._stream is not None:
            self._stream.synchronize()
        self._steps.clear()
        self._keep.clear()
        self._net, self._stream = None, None
        self._open = False

    def describe(self) -> str:
        """e.g. "torch (cuda, fp16, CUDA graphs)"; still valid after close (for the run summary)."""
        if self.checkpoint is None:
            return "torch (not open)"
        extra = ", CUDA graphs" if self.device == "cuda" and self.use_graphs else ""
        return f"torch ({self.device}, {self.precision}{extra})"

    # ------------------------------------------------------------------ inference

    def infer(self, a: np.ndarray, b: np.ndarray, norm_state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        step = self._steps.get(a.shape)
        if step is None:
            while len(self._steps) >= MAX_CACHED_SIZES:
                oldest = next(iter(self._steps))
                del self._steps[oldest]
                self._keep.pop(oldest, None)
            step = self._cpu_step() if self.device == "cpu" else self._cuda_step(a.shape)
            self._steps[a.shape] = step
        return step(a, b, norm_state)

    def _cpu_step(self) -> Step:
        torch, net, half = self._torch, self._net, self._half

        def step(a: np.ndarray, b: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            with torch.inference_mode():
                ta, tb, ts = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(state)
                fused, out = colour_forward(net, ta, tb, ts, half)
            return fused.numpy(), out.numpy()

        return step

    def _cuda_step(self, shape: tuple[int, ...]) -> Step:
        """Buffers for one frame size: pinned host in/out, device in/out, and the captured graph."""
        torch, net, half, stream = self._torch, self._net, self._half, self._stream
        dev = next(net.parameters()).device
        pin = {k: torch.empty(s, dtype=t, pin_memory=True) for k, s, t in
               (("a", shape, torch.uint8), ("b", shape, torch.uint8), ("state", (3,), torch.float32),
                ("fused", shape, torch.uint8), ("state_out", (3,), torch.float32))}
        d_in = {k: torch.zeros(pin[k].shape, dtype=pin[k].dtype, device=dev) for k in ("a", "b", "state")}
        host = {k: v.numpy() for k, v in pin.items()}

        def forward() -> tuple[Any, Any]:
            return colour_forward(net, d_in["a"], d_in["b"], d_in["state"], half)

        graph, outs = self._capture(forward)
        self._keep[shape] = (graph, outs, pin, d_in)

        def step(a: np.ndarray, b: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            np.copyto(host["a"], a)
            np.copyto(host["b"], b)
            np.copyto(host["state"], state)
            with torch.inference_mode(), torch.cuda.stream(stream):
                for k in ("a", "b", "state"):
                    d_in[k].copy_(pin[k], non_blocking=True)
                if graph is not None:
                    graph.replay()
                    fused, out = outs
                else:
                    fused, out = forward()
                pin["fused"].copy_(fused, non_blocking=True)
                pin["state_out"].copy_(out, non_blocking=True)
            stream.synchronize()
            return host["fused"], host["state_out"]

        return step


    def _capture(self, forward: Callable[[], Any]) -> tuple[Any, Any]:
        """(CUDA graph, its static outputs) of ``forward`` on the backend's stream, after warm-up;
        (None, None) when CUDA graphs are off or the capture fails (then a warning says why)."""
        torch, stream = self._torch, self._stream
        if not self.use_graphs:
            return None, None
        with torch.inference_mode(), torch.cuda.stream(stream):
            for _ in range(GRAPH_WARMUP):
                forward()
            stream.synchronize()
            try:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=stream):
                    outs = forward()
            except RuntimeError as exc:  # an op that cannot be captured: run eagerly from now on
                text = f"CUDA graph capture failed, running eagerly: {str(exc).splitlines()[0]}"
                self.warnings.append(text)
                log.warning(text)  # the pipeline reads ``warnings`` only once, after open
                self.use_graphs = False
                return None, None
        return graph, outs

    def core_runner(self, y_a: np.ndarray, y_b: np.ndarray) -> tuple[Callable[[], Any], Callable[[], None]]:
        """F alone on device-resident inputs, for benchmarks: (step, sync).

        y_a, y_b: float32 (H, W) Y planes in [0, 1], uploaded once. ``step()`` runs F (the CUDA
        graph when captured) and returns F's output, float32 (1, 1, H, W) on the device, without
        waiting for it; ``sync()`` waits.
        """
        torch, net, half = self._torch, self._net, self._half
        dev = next(net.parameters()).device
        x = torch.from_numpy(np.stack([y_a, y_b])[None].astype(np.float32)).to(dev)
        x = x.half() if half else x

        def forward() -> Any:
            return net(x).to(torch.float32)

        if self.device == "cpu":
            def step_cpu() -> Any:
                with torch.inference_mode():
                    return forward()

            return step_cpu, lambda: None
        graph, out = self._capture(forward)
        self._keep[("core", *y_a.shape)] = (graph, out, x)

        def step() -> Any:
            with torch.inference_mode(), torch.cuda.stream(self._stream):
                if graph is None:
                    return forward()
                graph.replay()
                return out

        return step, self._stream.synchronize


def _card(loaded: Any) -> dict[str, Any]:
    """A model card for a checkpoint (what rfexport would embed, minus export-time versions)."""
    task = loaded.task
    sources = TASK_SOURCES.get(task, ("a", "b")) if task else ("a", "b")
    ckpt = loaded.checkpoint or {}
    card = ModelCard(
        task=task,
        sources=(sources[0], sources[1]),
        model_config=loaded.net.config.to_dict(),
        provenance=Provenance(checkpoint_name=Path(loaded.path).name, kind=loaded.kind),
    )
    d = card.to_dict()
    for key in ("normalisation", "video_normalisation", "ema_alpha"):
        if key in ckpt:
            d[key] = ckpt[key]
    return d
