"""TensorRT classifier backend: an engine + its JSON sidecar -> class probabilities.

An engine file runs only on the TensorRT version and GPU that built it, and says nothing
about the model, so ``export.trt`` writes ``ENGINE.json`` beside it: the ONNX metadata,
the ONNX sha256, TensorRT version, GPU name, precision and max batch. Loading checks the
sidecar first and refuses, with the rebuild command, an engine from elsewhere.

The runtime is the pattern of NVIDIA's samples and jkjung-avt/tensorrt_demos: deserialize
once, allocate pinned host and device buffers once for the largest batch, then per call
copy in -> execute -> copy out -> synchronize. tensorrt and pycuda are imported lazily.
"""
import json
import os
import tempfile

import numpy as np

from edge import trt_compat
from edge.errors import ModelError
from edge.model_meta import MetadataError, validate

SIDECAR_FORMAT = "maskgate-engine/1"
SIDECAR_KEYS = ("meta", "onnx_sha256", "tensorrt", "gpu", "precision", "max_batch")


def import_tensorrt():
    """``import tensorrt``, or a ``ModelError`` that says how to get it."""
    try:
        import tensorrt
    except ImportError as exc:
        raise ModelError(
            "TensorRT's Python bindings are not installed (%s). On a Jetson they come with JetPack "
            "(sudo apt install python3-libnvinfer); on an x86 NVIDIA GPU: pip install tensorrt. "
            "Without TensorRT use the onnxruntime backend (backend: ort)." % exc)
    return tensorrt


def import_pycuda():
    """``import pycuda.driver``, or a ``ModelError`` that says how to get it."""
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise ModelError(
            "pycuda is not installed (%s); the TensorRT backend needs it for GPU buffers: "
            "pip3 install pycuda (on a Jetson first: export PATH=/usr/local/cuda/bin:$PATH)." % exc)
    return cuda


def gpu_name(cuda):
    """The name of GPU 0 (an engine is only valid on the GPU model it was built for)."""
    cuda.init()
    return str(cuda.Device(0).name())


def sidecar_path(engine_path):
    """Where an engine's metadata lives: ``ENGINE.json``."""
    return engine_path + ".json"


def write_sidecar(engine_path, info):
    """Write the sidecar atomically; ``info`` holds ``SIDECAR_KEYS`` (and any notes)."""
    missing = [k for k in SIDECAR_KEYS if k not in info]
    if missing:
        raise ValueError("sidecar is missing %s" % ", ".join(missing))
    path = sidecar_path(engine_path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(dict(info, format=SIDECAR_FORMAT), f, indent=2, sort_keys=True)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def read_sidecar(engine_path):
    """Read and check an engine's sidecar; ``ModelError`` naming what is wrong."""
    path = sidecar_path(engine_path)
    if not os.path.isfile(path):
        raise ModelError("%s has no sidecar %s: an engine alone does not say which model it is; "
                         "build it with python -m export.trt MODEL.onnx" % (engine_path, path))
    try:
        with open(path) as f:
            info = json.load(f)
    except ValueError as exc:
        raise ModelError("%s is not valid JSON: %s" % (path, exc))
    missing = [k for k in SIDECAR_KEYS if k not in info] if isinstance(info, dict) else list(SIDECAR_KEYS)
    if missing or info.get("format") != SIDECAR_FORMAT:
        raise ModelError("%s is not a maskgate engine sidecar (format %r, missing %s)"
                         % (path, info.get("format") if isinstance(info, dict) else None, missing or "nothing"))
    try:
        validate(info["meta"], source=path)
    except MetadataError as exc:
        raise ModelError(str(exc))
    return info


def check_sidecar(info, trt_version, gpu, engine_path):
    """Refuse an engine built by another TensorRT version or for another GPU, saying how to rebuild."""
    problems = []
    if info["tensorrt"] != trt_version:
        problems.append("TensorRT %s (this machine has %s)" % (info["tensorrt"], trt_version))
    if info["gpu"] != gpu:
        problems.append("GPU %r (this machine has %r)" % (info["gpu"], gpu))
    if problems:
        source = info.get("onnx") or "MODEL.onnx"
        raise ModelError("%s was built for %s; TensorRT engines only run where they were built. Rebuild it "
                         "here: python -m export.trt %s -o %s --max-batch %d --%s (or delete it and let the "
                         "engine cache rebuild it)" % (engine_path, " and ".join(problems), source, engine_path,
                                                       int(info["max_batch"]), info["precision"]))
    return info


class TrtClassifier(object):
    """A TensorRT engine behind the classifier interface: ``predict(NCHW float32) -> (N, C) probs``.

    ``meta`` (the model's metadata), ``classes``, ``max_batch`` and ``backend`` ("trt") come
    from the sidecar. One execution context: call ``predict`` from one thread at a time
    (any thread; the CUDA context is pushed around each call).
    """

    backend = "trt"

    def __init__(self, engine_path, max_batch=None):
        if not os.path.isfile(engine_path):
            raise ModelError("TensorRT engine not found: %s" % engine_path)
        self.engine_path = engine_path
        self.sidecar = read_sidecar(engine_path)
        self.meta = self.sidecar["meta"]
        self.classes = list(self.meta["classes"])
        built = int(self.sidecar["max_batch"])
        if max_batch is not None and not 1 <= int(max_batch) <= built:
            raise ModelError("max_batch %s: %s was built for batches of 1..%d (rebuild with --max-batch)"
                             % (max_batch, engine_path, built))
        self.max_batch = int(max_batch or built)
        self._ctx = None
        trt, cuda = import_tensorrt(), import_pycuda()
        check_sidecar(self.sidecar, trt.__version__, gpu_name(cuda), engine_path)
        self._cuda = cuda
        # The primary context is the one TensorRT's runtime uses; pushing it around each
        # call lets any thread (the service's worker) run the engine.
        self._ctx = cuda.Device(0).retain_primary_context()
        self._ctx.push()
        try:
            self._load(trt)
        except Exception:
            self._ctx.pop()
            self.close()
            raise
        self._ctx.pop()

    def _load(self, trt):
        cuda = self._cuda
        with open(self.engine_path, "rb") as f:
            data = f.read()
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            raise ModelError("TensorRT could not load %s (corrupt or from another TensorRT); rebuild it with "
                             "python -m export.trt" % self.engine_path)
        self._context = self._engine.create_execution_context()
        self._tensors = trt_compat.io_tensors(trt, self._engine)
        inputs = [i for i, t in enumerate(self._tensors) if t[1]]
        if len(inputs) != 1 or len(self._tensors) != 2:
            raise ModelError("%s: expected one input and one output, found %s"
                             % (self.engine_path, [t[0] for t in self._tensors]))
        self._in = inputs[0]
        h, w = self.meta["input_size"]
        self._shapes = {self._in: (self.max_batch, 3, int(h), int(w)),
                        1 - self._in: (self.max_batch, len(self.classes))}
        engine_in = self._tensors[self._in][2]
        if tuple(engine_in[1:]) != self._shapes[self._in][1:]:
            raise ModelError("%s: engine input %s does not match the sidecar's input size %s"
                             % (self.engine_path, engine_in, self.meta["input_size"]))
        self._host = [cuda.pagelocked_empty(self._shapes[i], t[3]) for i, t in enumerate(self._tensors)]
        self._device = [cuda.mem_alloc(h.nbytes) for h in self._host]
        self._stream = cuda.Stream()

    def predict(self, batch):
        """Class probabilities (N, C) float32 for a float32 NCHW batch, run in chunks of ``max_batch``."""
        batch = np.asarray(batch, dtype=np.float32)
        expected = self._shapes[self._in][1:]
        if batch.ndim != 4 or batch.shape[1:] != expected:
            raise ValueError("batch shape %s: this model takes (N,) + %s" % (batch.shape, expected))
        out = np.empty((len(batch), len(self.classes)), np.float32)
        cuda, host_in, host_out = self._cuda, self._host[self._in], self._host[1 - self._in]
        self._ctx.push()
        try:
            for start in range(0, len(batch), self.max_batch):
                n = len(batch[start:start + self.max_batch])
                host_in[:n] = batch[start:start + n]
                trt_compat.set_input_shape(self._context, self._in, self._tensors[self._in][0], (n,) + expected)
                cuda.memcpy_htod_async(self._device[self._in], host_in[:n], self._stream)
                trt_compat.execute(self._context, self._tensors, self._device, self._stream.handle)
                cuda.memcpy_dtoh_async(host_out[:n], self._device[1 - self._in], self._stream)
                self._stream.synchronize()
                out[start:start + n] = host_out[:n]
        finally:
            self._ctx.pop()
        return out

    def close(self):
        """Free the GPU buffers and the engine; safe to call twice."""
        if self._ctx is None:
            return
        self._ctx.push()
        try:
            for buf in getattr(self, "_device", []):
                buf.free()
            self._device = []
            for name in ("_context", "_engine", "_runtime"):
                setattr(self, name, None)  # TensorRT objects release on deletion, context first
        finally:
            self._ctx.pop()
            self._ctx.detach()
            self._ctx = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
