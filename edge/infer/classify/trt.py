"""TensorRT classifier backend: an engine + its JSON sidecar -> class probabilities.

The runtime is the pattern of NVIDIA's samples and jkjung-avt/tensorrt_demos: deserialize
once, allocate pinned host and device buffers once for the largest batch, then per call
copy in -> execute -> copy out -> synchronize. tensorrt and pycuda are imported lazily.
The engine file and its sidecar are described in ``edge.infer.classify.sidecar``; building
and verifying engines is ``edge.infer.classify.engine``.
"""
import os

import numpy as np

from edge.errors import ModelError
from edge.infer.classify import trt_compat
from edge.infer.classify.base import Classifier
from edge.infer.classify.sidecar import check_sidecar, read_sidecar


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


class TrtClassifier(Classifier):
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
        self.input_shape = (3, int(h), int(w))
        self._shapes = {self._in: (self.max_batch,) + self.input_shape,
                        1 - self._in: (self.max_batch, len(self.classes))}
        engine_in = self._tensors[self._in][2]
        if tuple(engine_in[1:]) != self._shapes[self._in][1:]:
            raise ModelError("%s: engine input %s does not match the sidecar's input size %s"
                             % (self.engine_path, engine_in, self.meta["input_size"]))
        self._host = [cuda.pagelocked_empty(self._shapes[i], t[3]) for i, t in enumerate(self._tensors)]
        self._device = [cuda.mem_alloc(h.nbytes) for h in self._host]
        self._stream = cuda.Stream()

    def _run(self, chunk):
        """One chunk of at most ``max_batch`` faces through the engine."""
        n = len(chunk)
        cuda, host_in, host_out = self._cuda, self._host[self._in], self._host[1 - self._in]
        self._ctx.push()
        try:
            host_in[:n] = chunk
            trt_compat.set_input_shape(self._context, self._in, self._tensors[self._in][0],
                                       (n,) + self.input_shape)
            cuda.memcpy_htod_async(self._device[self._in], host_in[:n], self._stream)
            trt_compat.execute(self._context, self._tensors, self._device, self._stream.handle)
            cuda.memcpy_dtoh_async(host_out[:n], self._device[1 - self._in], self._stream)
            self._stream.synchronize()
            return np.array(host_out[:n], np.float32)
        finally:
            self._ctx.pop()

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

    def __repr__(self):
        return "<TrtClassifier %s classes=%s max_batch=%d>" % (
            os.path.basename(self.engine_path), self.classes, self.max_batch)
