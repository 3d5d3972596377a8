"""The TensorRT backend's CUDA plumbing (cuda-python): pinned buffers, a stream, async copies.

TensorRT itself is replaced by a stand-in execution context whose "inference" is a
device-to-device copy on the backend's stream, so this runs wherever cuda-python
and a GPU are present, with or without TensorRT.
"""
from __future__ import annotations

import numpy as np
import pytest

from refusion.runtime.backends.base import INPUT_A, INPUT_STATE, OUTPUT_FUSED, OUTPUT_STATE

pytestmark = pytest.mark.gpu


@pytest.fixture()
def cudart():
    from refusion.runtime.backends.tensorrt import gpu_count

    cudart = pytest.importorskip("cuda.bindings.runtime")
    if gpu_count() == 0:
        pytest.skip("cudaGetDeviceCount found no usable GPU")
    return cudart


class CopyContext:
    """Stands in for an IExecutionContext: fused <- a, norm_state_out <- norm_state."""

    def __init__(self, cudart) -> None:
        self.cudart = cudart
        self.addresses: dict[str, int] = {}
        self.shapes: dict[str, tuple] = {}
        self.stream = None

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = int(ptr)
        return True

    def execute_async_v3(self, stream):
        d2d = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        h, w, c = self.shapes[INPUT_A]
        for src, dst, n in ((INPUT_A, OUTPUT_FUSED, h * w * c), (INPUT_STATE, OUTPUT_STATE, 12)):
            err, = self.cudart.cudaMemcpyAsync(self.addresses[dst], self.addresses[src], n, d2d, stream)
            assert int(err) == 0
        return True


def test_gpu_probe_counts_devices(cudart) -> None:
    from refusion.runtime.backends.tensorrt import gpu_count

    assert gpu_count() >= 1


def test_pinned_buffers_stream_and_copies(cudart) -> None:
    from refusion.runtime.backends.tensorrt import TensorRTBackend, _check

    be = TensorRTBackend("unused.plan")
    be.cudart = cudart
    be._context = CopyContext(cudart)
    be._stream = _check(cudart.cudaStreamCreate(), "cudaStreamCreate")
    rng = np.random.default_rng(0)
    try:
        for h, w in ((48, 64), (48, 64), (30, 40)):  # same size reuses buffers, a new size reallocates
            a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            b = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            state = np.array([0.1, 0.9, 0.5], np.float32)
            fused, state_out = be.infer(a, b, state)
            assert fused.shape == (h, w, 3) and fused.dtype == np.uint8
            np.testing.assert_array_equal(fused, a)
            np.testing.assert_array_equal(state_out, state)
    finally:
        be.close()
    assert be._buffers == {} and be._stream is None
