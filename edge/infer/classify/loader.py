"""``load_classifier``: a model file and a backend choice -> an open ``Classifier``.

- ``trt``: a TensorRT engine (``edge.infer.classify.trt``); given an ``.onnx`` the engine is
  built once, checked and cached (``edge.infer.classify.engine.ensure_engine``).
- ``ort``: onnxruntime on the ``.onnx`` (CUDA where present, else CPU).
- ``auto``: TensorRT when ``tensorrt`` imports (a Jetson), else onnxruntime.

The model describes itself: its ONNX ``metadata_props`` carry the metadata contract
(``edge.infer.model_meta``), and a model without it is refused rather than guessed at.
Inference runtimes are imported lazily, so that each machine needs only its own.
"""
import logging
import os

from edge.errors import ConfigError, ModelError
from edge.infer.classify.base import DEFAULT_MAX_BATCH

log = logging.getLogger(__name__)

BACKENDS = ("auto", "trt", "ort")
ENGINE_SUFFIXES = (".engine", ".trt", ".plan")


def tensorrt_available():
    """True when the ``tensorrt`` Python module imports (JetPack, or pip on an NVIDIA GPU)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def load_classifier(model_path, backend="auto", max_batch=None, engine_cache=None, verify_images=None,
                    log=log.info):
    """Open the classifier ``model_path`` (.onnx, or a TensorRT .engine) with ``backend``.

    ``max_batch``: largest batch per inference call (None: 16, or the engine's);
    ``engine_cache``: folder of built TensorRT engines (None: next to the model);
    ``verify_images``: ``(name, rgb)`` face crops a freshly built engine is checked on;
    ``log``: where engine-build progress goes (the service's logger by default).
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
        from edge.infer.classify.ort import OrtClassifier
        return OrtClassifier(model_path, max_batch=max_batch)
    # TensorRT: imported here only, so a CPU machine never needs it.
    from edge.infer.classify.trt import TrtClassifier, import_tensorrt
    import_tensorrt()  # ModelError naming what to install when it is absent
    if is_engine:
        return TrtClassifier(model_path, max_batch=max_batch)
    from edge.infer.classify.engine import ensure_engine
    cache = engine_cache or os.path.dirname(os.path.abspath(model_path))
    engine = ensure_engine(model_path, cache, max_batch=int(max_batch or DEFAULT_MAX_BATCH),
                           verify_images=verify_images, log=log)
    return TrtClassifier(engine, max_batch=max_batch)
