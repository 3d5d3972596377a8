"""refusion.runtime: real-time two-stream fusion (``rfrun``), image I/O, colour, model cards.

Deliberately light: numpy, OpenCV and click at most. onnxruntime, TensorRT and
cuda-python are imported only when a backend is opened, and torch never.
"""
