"""Mask classifiers behind one interface: a float32 NCHW batch of face crops -> probabilities.

``load_classifier(model_path, backend="auto"|"trt"|"ort", max_batch=None, engine_cache=None)``
returns a classifier with ``.meta`` (the model's metadata), ``.classes`` (output order),
``.max_batch``, ``.backend`` ("trt" or "ort"), ``.predict(batch) -> (N, C) float32`` (run in
chunks of ``max_batch``) and ``.close()``.

- ``trt``: a TensorRT engine (``edge.trt_backend.TrtClassifier``); given an ``.onnx`` the
  engine is built once and cached by ``export.trt.ensure_engine``.
- ``ort``: onnxruntime on the ``.onnx`` (CUDA where present, else CPU): ``OrtClassifier``.
- ``auto``: TensorRT when ``tensorrt`` imports (a Jetson), else onnxruntime.

The model describes itself: its ONNX ``metadata_props`` carry the metadata contract
(``edge.model_meta``), and a model without it is refused rather than guessed at.
Inference runtimes are imported lazily, so that each machine needs only its own.
"""
import os

import numpy as np

from edge.errors import ConfigError, ModelError
from edge.model_meta import REQUIRED_KEYS, MetadataError, from_string_props
from edge.preprocess import crops_to_batch

BACKENDS = ("auto", "trt", "ort")
ENGINE_SUFFIXES = (".engine", ".trt", ".plan")
DEFAULT_MAX_BATCH = 16  # the engine cache's default too: all faces of a busy frame in one call
# One intra-op thread: on the 2-core CPU, busy with video decoding and encoding, two threads
# measured slower per batch (MobileNetV2 96 px, batch 16: 10.6 ms p50 with one, 23 ms with
# two); only an idle machine gains from two (up to 1.5x at 128 px). OrtClassifier(threads=).
DEFAULT_THREADS = 1
EXPORT_HINT = "the model must come from `python -m export.onnx CHECKPOINT`, which writes it"


def tensorrt_available():
    """True when the ``tensorrt`` Python module imports (JetPack, or pip on an NVIDIA GPU)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def load_classifier(model_path, backend="auto", max_batch=None, engine_cache=None):
    """Open the classifier ``model_path`` (.onnx, or a TensorRT .engine) with ``backend``.

    ``max_batch``: largest batch per inference call (None: 16, or the engine's);
    ``engine_cache``: folder of built TensorRT engines (None: next to the model).
    Raises ModelError (missing file or runtime, bad metadata), ConfigError (bad backend).
    """
    if backend not in BACKENDS:
        raise ConfigError("classifier backend %r: accepted %s" % (backend, ", ".join(BACKENDS)))
    if max_batch is not None and int(max_batch) < 1:
        raise ConfigError("classifier max_batch %r: need 1 or more (or null)" % (max_batch,))
    if not os.path.isfile(model_path):
        raise ModelError("classifier model not found: %s (set classifier.model, or train one with "
                         "`make train` and export it with `python -m export.onnx CHECKPOINT`)" % model_path)
    is_engine = model_path.lower().endswith(ENGINE_SUFFIXES)
    if backend == "auto":
        backend = "trt" if is_engine or tensorrt_available() else "ort"
    if backend == "ort":
        if is_engine:
            raise ModelError("%s is a TensorRT engine: onnxruntime needs the .onnx it was built "
                             "from (or use backend trt)" % model_path)
        return OrtClassifier(model_path, max_batch=max_batch)
    # TensorRT: both modules are imported here only, so a CPU machine never needs them.
    from edge.trt_backend import TrtClassifier, import_tensorrt
    import_tensorrt()  # ModelError naming what to install when it is absent
    if is_engine:
        return TrtClassifier(model_path, max_batch=max_batch)
    from export.trt import ensure_engine
    cache = engine_cache or os.path.dirname(os.path.abspath(model_path))
    engine = ensure_engine(model_path, cache, max_batch=int(max_batch or DEFAULT_MAX_BATCH))
    return TrtClassifier(engine, max_batch=max_batch)


def ort_session(ort, path, threads=None, providers=None):
    """An onnxruntime session with ``threads`` intra-op threads and the best providers."""
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options,
                                providers=select_providers(ort.get_available_providers(), providers))


def select_providers(available, requested=None):
    """onnxruntime providers: ``requested`` if given, else CUDA where present, then CPU."""
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise ModelError("onnxruntime provider(s) %s not available here (available: %s)"
                             % (", ".join(missing), ", ".join(available)))
        return list(requested)
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def _dim(value):
    """An ONNX dimension as an int, or None when symbolic (dynamic)."""
    return value if isinstance(value, int) and value > 0 else None


class OrtClassifier(object):
    """An exported ONNX classifier in onnxruntime, checked against its own metadata.

    ``providers``: onnxruntime execution providers (default: CUDA where available, else
    CPU); ``threads``: intra-op threads (default 1, see DEFAULT_THREADS).
    """
    backend = "ort"

    def __init__(self, onnx_path, providers=None, max_batch=None, threads=DEFAULT_THREADS):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelError("the ort classifier backend needs onnxruntime: pip install onnxruntime "
                             "(or onnxruntime-gpu); on a Jetson use the TensorRT backend")
        self.path = onnx_path
        try:
            self.session = ort_session(ort, onnx_path, threads, providers)
        except Exception as exc:  # onnxruntime's own exception types: not an ONNX model
            raise ModelError("onnxruntime cannot load %s: %s" % (onnx_path, exc))
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
        self._shape = (3, h, w)
        self._static_batch = _dim(shape[0])

    def predict(self, batch):
        """Class probabilities (N, C) float32 for a float32 NCHW batch, in chunks of max_batch."""
        batch = np.asarray(batch)
        if batch.ndim != 4 or batch.shape[1:] != self._shape:
            raise ValueError("batch shape %s: this model takes (N,) + %s" % (batch.shape, self._shape))
        out = np.empty((len(batch), len(self.classes)), np.float32)
        for start in range(0, len(batch), self.max_batch):
            chunk = np.ascontiguousarray(batch[start:start + self.max_batch], dtype=self._dtype)
            probs = self.session.run([self._output], {self._input: chunk})[0]
            if probs.shape != (len(chunk), len(self.classes)):
                raise ModelError("%s returned %s for a batch of %d" % (self.path, probs.shape, len(chunk)))
            out[start:start + len(chunk)] = probs
        return out

    def close(self):
        """Release the onnxruntime session; safe to call twice."""
        self.session = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "<OrtClassifier %s classes=%s input=%s max_batch=%d providers=%s>" % (
            os.path.basename(self.path), self.classes, list(self._shape), self.max_batch, self.providers)


def classify_faces(classifier, frame_bgr, boxes):
    """Probabilities (N, C) float32 for the N xyxy ``boxes`` of one BGR frame, row i for box i.

    A box whose crop is empty (wholly outside the frame) gets a row of NaN, so rows stay
    aligned with ``boxes``; test with ``np.isnan(probs[:, 0])``. All crops go through in
    one ``predict`` call (chunked to the classifier's ``max_batch``).
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    probs = np.full((len(boxes), len(classifier.classes)), np.nan, np.float32)
    if len(boxes):
        batch, kept = crops_to_batch(frame_bgr, boxes, classifier.meta)
        if kept:
            probs[kept] = classifier.predict(batch)
    return probs
