"""The onnxruntime classifier backend: an exported ONNX model, checked against its own metadata."""
import os

import numpy as np

from edge.errors import ModelError
from edge.infer.classify.base import DEFAULT_MAX_BATCH, Classifier
from edge.infer.model_meta import REQUIRED_KEYS, MetadataError, from_string_props
from edge.infer.runtime import ort_session

# One intra-op thread: on the 2-core CPU, busy with video decoding and encoding, two threads
# measured slower per batch (MobileNetV2 96 px, batch 16: 10.6 ms p50 with one, 23 ms with
# two); only an idle machine gains from two (up to 1.5x at 128 px). OrtClassifier(threads=).
DEFAULT_THREADS = 1
EXPORT_HINT = "the model must come from `python -m export.onnx CHECKPOINT`, which writes it"


def _dim(value):
    """An ONNX dimension as an int, or None when symbolic (dynamic)."""
    return value if isinstance(value, int) and value > 0 else None


class OrtClassifier(Classifier):
    """An exported ONNX classifier in onnxruntime.

    ``providers``: onnxruntime execution providers (default: CUDA where available, else
    CPU); ``threads``: intra-op threads (default 1, see DEFAULT_THREADS).
    """
    backend = "ort"

    def __init__(self, onnx_path, providers=None, max_batch=None, threads=DEFAULT_THREADS):
        self.path = onnx_path
        self.session = ort_session(onnx_path, threads, providers, what="the ort classifier backend")
        self.providers = self.session.get_providers()
        self.meta = self._read_meta()
        self.classes = list(self.meta["classes"])
        self._check_io()
        limit = self._static_batch
        if max_batch is not None and limit is not None and int(max_batch) > limit:
            raise ModelError("max_batch %s: %s has a fixed batch of %d" % (max_batch, onnx_path, limit))
        self.max_batch = int(max_batch or limit or DEFAULT_MAX_BATCH)

    def _read_meta(self):
        props = dict(self.session.get_modelmeta().custom_metadata_map)
        missing = [k for k in REQUIRED_KEYS if k not in props]
        if missing:
            raise ModelError("%s has no usable model metadata (missing %s): %s"
                             % (self.path, ", ".join(missing), EXPORT_HINT))
        try:
            return from_string_props(props, source=self.path)
        except MetadataError as exc:
            raise ModelError("%s; %s" % (exc, EXPORT_HINT))

    def _check_io(self):
        """The graph must take (N, 3, H, W) at the metadata's input size and give (N, classes)."""
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError("%s: expected one input and one output, found %s -> %s (%s)" % (
                self.path, [i.name for i in inputs], [o.name for o in outputs], EXPORT_HINT))
        inp, out = inputs[0], outputs[0]
        h, w = [int(v) for v in self.meta["input_size"]]
        shape = list(inp.shape)
        if len(shape) != 4 or _dim(shape[1]) != 3 or _dim(shape[2]) not in (None, h) \
                or _dim(shape[3]) not in (None, w):
            raise ModelError("%s: the graph's input %s is %s, but its metadata says input_size "
                             "[%d, %d] (N, 3, %d, %d expected): metadata and model do not match"
                             % (self.path, inp.name, shape, h, w, h, w))
        if inp.type not in ("tensor(float)", "tensor(float16)"):
            raise ModelError("%s: input type %s, expected float32" % (self.path, inp.type))
        if len(out.shape) != 2 or _dim(out.shape[1]) not in (None, len(self.classes)):
            raise ModelError("%s: the graph's output %s is %s, but its metadata names %d classes %s: "
                             "metadata and model do not match"
                             % (self.path, out.name, list(out.shape), len(self.classes), self.classes))
        self._input, self._output = inp.name, out.name
        self._dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        self.input_shape = (3, h, w)
        self._static_batch = _dim(shape[0])

    def _run(self, chunk):
        chunk = np.ascontiguousarray(chunk, dtype=self._dtype)
        return self.session.run([self._output], {self._input: chunk})[0]

    def close(self):
        """Release the onnxruntime session; safe to call twice."""
        self.session = None

    def __repr__(self):
        return "<OrtClassifier %s classes=%s input=%s max_batch=%d providers=%s>" % (
            os.path.basename(self.path), self.classes, list(self.input_shape), self.max_batch, self.providers)
