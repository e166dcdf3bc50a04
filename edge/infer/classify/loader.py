"""``load_classifier``: a model file and a backend choice -> an open ``Classifier``.

- ``trt``: a TensorRT engine (``edge.infer.classify.trt``); given an ``.onnx`` the engine is
  built once, checked and cached (``edge.infer.classify.engine.ensure_engine``).
- ``ort``: onnxruntime on the ``.onnx`` (CUDA where present, else CPU).
- ``auto``: TensorRT when ``tensorrt`` imports (a Jetson), else onnxruntime. When TensorRT
  imports but cannot be used (pycuda missing, an engine that does not build, load or pass
  its check), the reason is logged and onnxruntime is used: the classifier's ``fallback``
  says why, so that the service's health can show it (a crash loop would show nothing).

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
    if backend == "auto" and not is_engine and tensorrt_available():
        try:
            return _load_trt(model_path, max_batch, engine_cache, verify_images, log)
        except Exception as exc:  # noqa: any TensorRT/CUDA failure; onnxruntime still works
            reason = "TensorRT could not be used (%s: %s)" % (type(exc).__name__, _one_line(exc))
            logging.getLogger(__name__).warning("%s; falling back to onnxruntime", reason)
            try:
                classifier = _load_ort(model_path, max_batch, is_engine)
            except ModelError as ort_exc:
                raise ModelError("%s, and onnxruntime cannot be used either: %s" % (reason, ort_exc))
            classifier.fallback = reason
            return classifier
    if backend == "auto":
        backend = "trt" if is_engine else "ort"
    if backend == "ort":
        return _load_ort(model_path, max_batch, is_engine)
    return _load_trt(model_path, max_batch, engine_cache, verify_images, log)


def _one_line(exc):
    text = " ".join(str(exc).split())
    return text if len(text) <= 800 else text[:800] + "..."


def _load_ort(model_path, max_batch, is_engine):
    if is_engine:
        raise ModelError("%s is a TensorRT engine: onnxruntime needs the .onnx it was built "
                         "from (or use backend trt)" % model_path)
    from edge.infer.classify.ort import OrtClassifier
    return OrtClassifier(model_path, max_batch=max_batch)


def _load_trt(model_path, max_batch, engine_cache, verify_images, log):
    # TensorRT: imported here only, so a CPU machine never needs it.
    is_engine = model_path.lower().endswith(ENGINE_SUFFIXES)
    from edge.infer.classify.trt import TrtClassifier, import_tensorrt
    import_tensorrt()  # ModelError naming what to install when it is absent
    if is_engine:
        return TrtClassifier(model_path, max_batch=max_batch)
    from edge.infer.classify.engine import ensure_engine
    cache = engine_cache or os.path.dirname(os.path.abspath(model_path))
    engine = ensure_engine(model_path, cache, max_batch=int(max_batch or DEFAULT_MAX_BATCH),
                           verify_images=verify_images, log=log)
    return TrtClassifier(engine, max_batch=max_batch)
