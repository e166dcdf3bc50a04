"""Checkpoint -> verified ONNX (``export.onnx``, workstation, torch) -> TensorRT engine (``export.trt``).

Nothing is imported here: ``export.trt`` must import on the Jetson's Python 3.6 without
torch, so each submodule pulls in only what it needs.
"""
