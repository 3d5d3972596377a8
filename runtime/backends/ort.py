"""ONNX Runtime backend: CUDA execution provider with IO binding, or the CPU provider.

The loader :func:`load_session` creates and checks the session (:class:`LoadedSession`); the
runner :class:`OrtBackend` only runs it.

The provider that really runs is read back from ``session.get_providers()``: a
CUDA build without a usable GPU silently falls back to CPU, and
``get_available_providers()`` would still list CUDA.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._deps import require
from ..errors import EngineError
from .base import (
    INPUT_A,
    INPUT_B,
    INPUT_STATE,
    META_CARD,
    META_GRAPH,
    META_PRECISION,
    OUTPUT_FUSED,
    OUTPUT_STATE,
    Backend,
    parse_card,
)

CUDA_EP, CPU_EP = "CUDAExecutionProvider", "CPUExecutionProvider"


# -- loader: a checked session; the provider that really runs -----------------------------------
@dataclass
class LoadedSession:
    """A colour-graph session that :func:`load_session` created and checked, ready for a runner."""

    model: Path  # the ``*.colour.onnx`` file
    session: Any  # onnxruntime.InferenceSession
    providers: list[str]  # the providers that really run, first = the one doing the work
    device: str  # "cuda" or "cpu"
    card: dict[str, Any]  # the model card from the ONNX metadata ({} when absent)
    precision: str  # "fp16" or "fp32", from the ONNX metadata


def load_session(model: str | Path, device: str = "auto", threads: int = 0, device_id: int = 0) -> LoadedSession:
    """Open ``model`` (the colour graph: a, b uint8 (H, W, 3) BGR) with onnxruntime and check it.

    device: "cuda" (CUDA EP, EngineError if it does not really run), "cpu", or "auto" (CUDA
    when it really runs, else CPU). threads: intra-op threads on the CPU, 0 = the measured
    default. Raises EngineError (or MissingDependencyError) with one message.
    """
    if device not in ("auto", "cuda", "cpu"):
        raise ValueError(f"device must be auto, cuda or cpu, not {device!r}")
    ort = require("onnxruntime", "the ONNX Runtime backend")
    model = Path(model)
    if not model.is_file():
        raise EngineError(f"model not found: {model}")
    session = _create_session(ort, model, device, threads, device_id)
    providers = list(session.get_providers())
    really = "cuda" if providers and providers[0] == CUDA_EP else "cpu"
    if device == "cuda" and really != "cuda":
        raise EngineError(
            f"requested onnxruntime with {CUDA_EP}, but the session runs on {providers[0]} "
            "(no usable GPU, or CUDA/cuDNN libraries missing); use --backend ort-cpu"
        )
    card, precision = _read_metadata(session, model)
    _check_io(session, model)
    return LoadedSession(model, session, providers, really, card, precision)


def _create_session(ort: Any, model: Path, device: str, threads: int, device_id: int) -> Any:
    """An InferenceSession asking for the CUDA provider when wanted and available, else the CPU one."""
    available = ort.get_available_providers()
    wanted: list[Any] = [CPU_EP]
    if device in ("auto", "cuda") and CUDA_EP in available:
        wanted = [(CUDA_EP, {"device_id": device_id}), CPU_EP]
    elif device == "cuda":
        raise EngineError(
            f"requested onnxruntime with {CUDA_EP}, available: {', '.join(available)}; "
            "install onnxruntime-gpu (pip install 'refusion[gpu]') or use --backend ort-cpu"
        )
    from ..ort_tuning import cpu_session_options

    opts = cpu_session_options(threads)  # CPU-tuned (measured); harmless with the CUDA provider
    opts.log_severity_level = 3  # errors only: a failed CUDA load is detected by the caller
    try:
        return ort.InferenceSession(str(model), sess_options=opts, providers=wanted)
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        raise EngineError(f"cannot load ONNX model {model}: {_first_line(exc)}") from None


def _read_metadata(session: Any, model: Path) -> tuple[dict[str, Any], str]:
    """(model card, precision) from the ONNX metadata; EngineError for another graph than the colour one."""
    meta = session.get_modelmeta().custom_metadata_map
    graph = meta.get(META_GRAPH, "")
    if graph and graph != "colour":
        colour = model.with_name(model.name.replace(".onnx", ".colour.onnx"))
        hint = f" ({colour.name} is beside it)" if colour.is_file() else ""
        raise EngineError(
            f"{model.name} is the {graph!r} graph; rfrun runs the colour graph "
            f"<stem>.colour.onnx written by rfexport{hint}"
        )
    return parse_card(meta.get(META_CARD)), meta.get(META_PRECISION, "fp32")


def _check_io(session: Any, model: Path) -> None:
    """EngineError unless the session has the colour graph's inputs and outputs."""
    ins = {i.name: i for i in session.get_inputs()}
    outs = {o.name for o in session.get_outputs()}
    need_in, need_out = {INPUT_A, INPUT_B, INPUT_STATE}, {OUTPUT_FUSED, OUTPUT_STATE}
    if not need_in <= set(ins) or not need_out <= outs:
        raise EngineError(
            f"{model.name} is not a refusion colour graph: inputs {sorted(ins)}, outputs "
            f"{sorted(outs)}; expected inputs {sorted(need_in)} and outputs {sorted(need_out)}"
        )
    if ins[INPUT_A].type != "tensor(uint8)":
        raise EngineError(
            f"{model.name} takes {ins[INPUT_A].type} inputs; rfrun needs the colour graph "
            "(uint8 BGR frames), written by rfexport as <stem>.colour.onnx"
        )


# -- runner: run the session, with IO binding on the CUDA provider ------------------------------
class OrtBackend(Backend):
    """Runs the colour ONNX graph with onnxruntime; :meth:`open` loads it with :func:`load_session`.

    device: "cuda" (CUDA EP, error if it does not really run), "cpu", or "auto"
    (CUDA when it really runs, else CPU).
    """

    name = "onnxruntime"

    def __init__(self, model: str | Path, device: str = "auto", threads: int = 0, device_id: int = 0) -> None:
        super().__init__(model)
        if device not in ("auto", "cuda", "cpu"):
            raise ValueError(f"device must be auto, cuda or cpu, not {device!r}")
        self.requested = device
        self.threads = threads
        self.device_id = device_id
        self.session = None
        self.providers: list[str] = []
        self._binding = None
        #: where IO-bound inputs live ("cuda" on the CUDA provider); None = plain session.run
        self.io_binding_device: str | None = None
        self._shape: tuple[int, ...] | None = None
        self._inputs: dict = {}
        self._outputs: dict = {}

    def open(self) -> "OrtBackend":
        loaded = load_session(self.model, self.requested, self.threads, self.device_id)
        self.session, self.providers, self.device = loaded.session, loaded.providers, loaded.device
        self.card, self.precision = loaded.card, loaded.precision
        self.io_binding_device = "cuda" if self.device == "cuda" else None
        self._open = True
        return self

    def describe(self) -> str:
        return f"onnxruntime ({self.providers[0] if self.providers else 'not open'})"

    def infer(self, a: np.ndarray, b: np.ndarray, norm_state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.io_binding_device is not None:
            return self._infer_bound(a, b, norm_state)
        fused, state = self.session.run(None, {INPUT_A: a, INPUT_B: b, INPUT_STATE: norm_state})[:2]
        return fused, state

    def _infer_bound(self, a: np.ndarray, b: np.ndarray, norm_state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """IO binding: inputs live in (device) OrtValues updated in place, outputs land in host arrays
        allocated once per frame size, so the hot loop allocates nothing."""
        ort = require("onnxruntime")
        if a.shape != self._shape:
            self._shape = a.shape
            dev = (self.io_binding_device, self.device_id)
            self._inputs = {
                INPUT_A: ort.OrtValue.ortvalue_from_numpy(a, *dev),
                INPUT_B: ort.OrtValue.ortvalue_from_numpy(b, *dev),
                INPUT_STATE: ort.OrtValue.ortvalue_from_numpy(norm_state, *dev),
            }
            self._outputs = {
                OUTPUT_FUSED: np.empty(a.shape, np.uint8),
                OUTPUT_STATE: np.empty((3,), np.float32),
            }
            io = self.session.io_binding()
            for name, value in self._inputs.items():
                io.bind_ortvalue_input(name, value)
            for name, arr in self._outputs.items():
                io.bind_output(name, "cpu", 0, arr.dtype, arr.shape, arr.ctypes.data)
            self._binding = io
        else:
            self._inputs[INPUT_A].update_inplace(a)
            self._inputs[INPUT_B].update_inplace(b)
            self._inputs[INPUT_STATE].update_inplace(norm_state)
        self.session.run_with_iobinding(self._binding)
        return self._outputs[OUTPUT_FUSED], self._outputs[OUTPUT_STATE]

    def close(self) -> None:
        self._binding = None
        self._inputs, self._outputs = {}, {}
        self._shape = None
        self.session = None
        self._open = False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
