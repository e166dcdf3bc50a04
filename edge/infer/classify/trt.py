"""TensorRT classifier backend: an engine + its JSON sidecar -> class probabilities.

The runtime (``TrtRunner``, shared with the face detector's engine) is the pattern of
NVIDIA's samples and jkjung-avt/tensorrt_demos: deserialize once, allocate pinned host and
device buffers once for the largest shapes, then per call set the input shapes, copy in ->
execute -> copy out -> synchronize. tensorrt and pycuda are imported lazily.
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


class TrtRunner(object):
    """One TensorRT engine with GPU buffers for its largest shapes: ``run({input: array}) -> {output: array}``.

    ``max_inputs``: {input name: largest shape}; output buffers are sized from the shapes
    TensorRT infers for those. Each ``run`` sets the inputs' shapes (within the engine's
    profile), copies in, executes, and returns the outputs at their shapes for that call.
    One execution context: call ``run`` from one thread at a time (any thread; the CUDA
    context is pushed around each call). Used by the classifier and the face detector.
    """

    def __init__(self, engine_path, max_inputs):
        self.engine_path = engine_path
        self._ctx = None
        trt, cuda = import_tensorrt(), import_pycuda()
        self._cuda = cuda
        # The primary context is the one TensorRT's runtime uses; pushing it around each
        # call lets any thread (the service's worker) run the engine.
        self._ctx = cuda.Device(0).retain_primary_context()
        self._ctx.push()
        try:
            self._load(trt, max_inputs)
        except Exception:
            self._ctx.pop()
            self.close()
            raise
        self._ctx.pop()

    def _load(self, trt, max_inputs):
        cuda = self._cuda
        with open(self.engine_path, "rb") as f:
            data = f.read()
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            raise ModelError("TensorRT could not load %s (corrupt or from another TensorRT); rebuild it with "
                             "python -m export.trt" % self.engine_path)
        self._context = self._engine.create_execution_context()
        self.tensors = trt_compat.io_tensors(trt, self._engine)
        names = [t[0] for t in self.tensors if t[1]]
        if sorted(names) != sorted(max_inputs):
            raise ModelError("%s: engine inputs %s, expected %s" % (self.engine_path, names, sorted(max_inputs)))
        shapes = self._set_shapes(max_inputs)
        self._host = [cuda.pagelocked_empty(int(np.prod(shape)), t[3]) for shape, t in zip(shapes, self.tensors)]
        self._device = [cuda.mem_alloc(h.nbytes) for h in self._host]
        self._stream = cuda.Stream()

    def _set_shapes(self, inputs):
        """Set the input shapes; every tensor's shape for them, in ``tensors`` order."""
        for index, (name, is_input, _, _) in enumerate(self.tensors):
            if is_input:
                trt_compat.set_input_shape(self._context, index, name, inputs[name])
        return [tuple(inputs[t[0]]) if t[1] else trt_compat.tensor_shape(self._context, i, t[0])
                for i, t in enumerate(self.tensors)]

    def run(self, feeds):
        """Run the engine on ``feeds`` ({input name: float32 array}); {output name: float32 array}."""
        cuda = self._cuda
        self._ctx.push()
        try:
            shapes = self._set_shapes({name: np.shape(array) for name, array in feeds.items()})
            sizes = [int(np.prod(shape)) for shape in shapes]
            for i, (name, is_input, _, _) in enumerate(self.tensors):
                if is_input:
                    self._host[i][:sizes[i]] = np.ascontiguousarray(feeds[name], self._host[i].dtype).ravel()
                    cuda.memcpy_htod_async(self._device[i], self._host[i][:sizes[i]], self._stream)
            trt_compat.execute(self._context, self.tensors, self._device, self._stream.handle)
            for i, (_, is_input, _, _) in enumerate(self.tensors):
                if not is_input:
                    cuda.memcpy_dtoh_async(self._host[i][:sizes[i]], self._device[i], self._stream)
            self._stream.synchronize()
            return {name: np.array(self._host[i][:sizes[i]], np.float32).reshape(shapes[i])
                    for i, (name, is_input, _, _) in enumerate(self.tensors) if not is_input}
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


class TrtClassifier(Classifier):
    """A TensorRT engine behind the classifier interface: ``predict(NCHW float32) -> (N, C) probs``.

    ``meta`` (the model's metadata), ``classes``, ``max_batch`` and ``backend`` ("trt") come
    from the sidecar. One execution context: call ``predict`` from one thread at a time.
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
        self._runner = None
        trt, cuda = import_tensorrt(), import_pycuda()
        check_sidecar(self.sidecar, trt.__version__, gpu_name(cuda), engine_path)
        h, w = self.meta["input_size"]
        self.input_shape = (3, int(h), int(w))
        self._runner = TrtRunner(engine_path, {"input": (self.max_batch,) + self.input_shape})
        tensors = self._runner.tensors
        engine_in = [t[2] for t in tensors if t[1]][0]
        problem = None
        if len(tensors) != 2:
            problem = "expected one input and one output, found %s" % [t[0] for t in tensors]
        elif tuple(engine_in[1:]) != self.input_shape:
            problem = "engine input %s does not match the sidecar's input size %s" % (engine_in, self.meta["input_size"])
        if problem:
            self.close()
            raise ModelError("%s: %s" % (engine_path, problem))
        self._output = [t[0] for t in tensors if not t[1]][0]

    def _run(self, chunk):
        """One chunk of at most ``max_batch`` faces through the engine."""
        return self._runner.run({"input": chunk})[self._output]

    def close(self):
        """Free the GPU buffers and the engine; safe to call twice."""
        if self._runner is not None:
            self._runner.close()
            self._runner = None

    def __repr__(self):
        return "<TrtClassifier %s classes=%s max_batch=%d>" % (
            os.path.basename(self.engine_path), self.classes, self.max_batch)
