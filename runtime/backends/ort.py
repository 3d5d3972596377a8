"""ONNX Runtime backend: CUDA execution provider with IO binding, or the CPU provider.

The provider that really runs is read back from ``session.get_providers()``: a
CUDA build without a usable GPU silently falls back to CPU, and
``get_available_providers()`` would still list CUDA.
"""
from __future__ import annotations

from pathlib import Path

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


class OrtBackend(Backend):
    """Runs the colour ONNX graph with onnxruntime.

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
        ort = require("onnxruntime", "the ONNX Runtime backend")
        if not self.model.is_file():
            raise EngineError(f"model not found: {self.model}")
        available = ort.get_available_providers()
        wanted = [CPU_EP]
        if self.requested in ("auto", "cuda") and CUDA_EP in available:
            wanted = [(CUDA_EP, {"device_id": self.device_id}), CPU_EP]
        elif self.requested == "cuda":
            raise EngineError(
                f"requested onnxruntime with {CUDA_EP}, available: {', '.join(available)}; "
                "install onnxruntime-gpu (pip install 'refusion[gpu]') or use --backend ort-cpu"
            )
        from ..ort_tuning import cpu_session_options

        opts = cpu_session_options(self.threads)  # CPU-tuned (measured); harmless with the CUDA provider
        opts.log_severity_level = 3  # errors only: a failed CUDA load is detected below
        try:
            self.session = ort.InferenceSession(str(self.model), sess_options=opts, providers=wanted)
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise EngineError(f"cannot load ONNX model {self.model}: {_first_line(exc)}") from None
        self.providers = list(self.session.get_providers())
        self.device = "cuda" if self.providers and self.providers[0] == CUDA_EP else "cpu"
        self.io_binding_device = "cuda" if self.device == "cuda" else None
        if self.requested == "cuda" and self.device != "cuda":
            self.close()
            raise EngineError(
                f"requested onnxruntime with {CUDA_EP}, but the session runs on {self.providers[0]} "
                "(no usable GPU, or CUDA/cuDNN libraries missing); use --backend ort-cpu"
            )
        self._read_metadata()
        self._check_io()
        self._open = True
        return self

    def _read_metadata(self) -> None:
        meta = self.session.get_modelmeta().custom_metadata_map
        graph = meta.get(META_GRAPH, "")
        if graph and graph != "colour":
            colour = self.model.with_name(self.model.name.replace(".onnx", ".colour.onnx"))
            hint = f" ({colour.name} is beside it)" if colour.is_file() else ""
            raise EngineError(
                f"{self.model.name} is the {graph!r} graph; rfrun runs the colour graph "
                f"<stem>.colour.onnx written by rfexport{hint}"
            )
        self.card = parse_card(meta.get(META_CARD))
        self.precision = meta.get(META_PRECISION, "fp32")

    def _check_io(self) -> None:
        ins = {i.name: i for i in self.session.get_inputs()}
        outs = {o.name for o in self.session.get_outputs()}
        need_in, need_out = {INPUT_A, INPUT_B, INPUT_STATE}, {OUTPUT_FUSED, OUTPUT_STATE}
        if not need_in <= set(ins) or not need_out <= outs:
            self.close()
            raise EngineError(
                f"{self.model.name} is not a refusion colour graph: inputs {sorted(ins)}, outputs "
                f"{sorted(outs)}; expected inputs {sorted(need_in)} and outputs {sorted(need_out)}"
            )
        if ins[INPUT_A].type != "tensor(uint8)":
            self.close()
            raise EngineError(
                f"{self.model.name} takes {ins[INPUT_A].type} inputs; rfrun needs the colour graph "
                "(uint8 BGR frames), written by rfexport as <stem>.colour.onnx"
            )

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
