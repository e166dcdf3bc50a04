"""Mask classifiers (``base.load_classifier``): onnxruntime and TensorRT behind one interface,
and the TensorRT engines (``engine``: build, cache, check; ``sidecar``: the file format)."""
