"""onnxruntime sessions, one way for every model the device runs (detectors and classifiers).

onnxruntime is imported lazily: a Jetson running TensorRT and the Haar or SSD detector
needs none of it.
"""
from edge.errors import ModelError


def import_onnxruntime(what):
    """``import onnxruntime``, or a ModelError saying that ``what`` needs it and how to get it."""
    try:
        import onnxruntime
    except ImportError:
        raise ModelError("%s needs onnxruntime: pip install onnxruntime (or onnxruntime-gpu; on a "
                         "Jetson NVIDIA's onnxruntime-gpu wheel for JetPack)" % what)
    return onnxruntime


def select_providers(available, requested=None):
    """onnxruntime providers: ``requested`` if given, else CUDA where present, then CPU."""
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise ModelError("onnxruntime provider(s) %s not available here (available: %s)"
                             % (", ".join(missing), ", ".join(available)))
        return list(requested)
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def ort_session(path, threads=None, providers=None, what="model"):
    """An onnxruntime session on ``path`` with ``threads`` intra-op threads and the best providers.

    Raises ModelError when onnxruntime is absent or cannot load the file.
    """
    ort = import_onnxruntime(what)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(path, options,
                                    providers=select_providers(ort.get_available_providers(), providers))
    except ModelError:
        raise
    except Exception as exc:  # onnxruntime's own exception types: not an ONNX model, bad graph
        raise ModelError("onnxruntime cannot load %s: %s" % (path, exc))
