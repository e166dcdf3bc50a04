"""Helpers the tests share: small real models (a checkpoint trained on real faces, tiny ONNX
classifiers) and a stand-in for TensorRT where it cannot be installed."""
import os

import numpy as np
import pytest

from export.samples import default_data_root

DATA = default_data_root()  # ../shared/data, or $MASKGATE_DATA
FMD = os.path.join(DATA, "fmd")
SIZE = 64  # small input: the whole export suite stays fast on a 2-core CPU


def require_data():
    """Skip the calling test when the development data is absent."""
    if not os.path.isdir(FMD):
        pytest.skip("real face data not found at %s (../shared/data)" % os.path.normpath(DATA))


def real_faces(per_class=24):
    """``(rgb, label)`` pairs from fmd's two class folders (label 0 = mask, 1 = no_mask)."""
    from edge.infer.samples import folder_images
    faces = []
    for label, sub in enumerate(("with_mask", "without_mask")):
        faces += [(rgb, label) for _, rgb in folder_images(os.path.join(FMD, sub), per_class)]
    return faces


def make_checkpoint(path, arch="mobilenet_v2", steps=5, weights="imagenet"):
    """Fine-tune ``arch`` for a few SGD steps on ~48 real crops at 64 px and save a checkpoint.

    A few steps move the head off its random init, so the probabilities are not all
    near 0.5 and a parity check compares a real decision, not noise.
    """
    import torch

    from edge.infer import model_meta
    from train import checkpoint, models, transforms
    from train.weights import cached_path
    if weights == "imagenet" and cached_path(arch) is None:
        weights = "none"  # offline without `make weights`: a from-scratch start still trains a little
    torch.manual_seed(0)
    mean, std = models.normalization(arch)
    meta = model_meta.make_metadata(arch, ["mask", "no_mask"], (SIZE, SIZE), mean, std, crop_margin=0.15,
                                  metrics={"note": "export test fixture, %d steps" % steps})
    model = models.build_model(arch, 2, weights)
    faces = real_faces()
    x = torch.stack([transforms.eval_transform(rgb, meta) for rgb, _ in faces])
    y = torch.tensor([label for _, label in faces])
    models.set_trainable(model, "head")  # head-only steps: a fraction of full backprop's CPU time
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    model.train()
    order = torch.randperm(len(x))
    for step in range(steps):
        idx = order[(step * 16) % len(x):][:16]
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        optimizer.step()
    model.eval()
    checkpoint.save(path, model, meta, epoch=0)
    return path


def batch_of(meta, count, seed=0):
    """A deterministic batch of real faces, preprocessed with the device's code path."""
    import cv2

    from edge.infer.preprocess import crops_to_batch
    from export.samples import verification_images
    rows = []
    for _, rgb in verification_images(limit=count)[:count]:
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        h, w = bgr.shape[:2]
        batch, _ = crops_to_batch(bgr, np.array([[0, 0, w, h]], np.float32), dict(meta, crop_margin=0.0))
        rows.append(batch[0])
    return np.stack(rows)


# -- a stand-in for TensorRT + pycuda, for testing our control flow where TensorRT cannot be installed --
# The "engine" is the ONNX file's bytes and "executing" it runs onnxruntime on the bytes in the
# fake device buffer, so the classifier's buffers, chunking and copies are checked for real
# numbers. It proves nothing about TensorRT itself: that needs a GPU machine.

def fake_tensorrt(api, fast_int8=True):
    """A module with the TensorRT 8.2 (``api=8``) or 10 (``api=10``) Python API surface we use."""
    import types

    import onnxruntime as ort
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0" if api == 10 else "8.2.1.8"
    trt.calls = []
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.BuilderFlag = type("BuilderFlag", (), {"FP16": "fp16", "INT8": "int8"})
    trt.TensorIOMode = type("TensorIOMode", (), {"INPUT": "in", "OUTPUT": "out"})
    trt.MemoryPoolType = type("MemoryPoolType", (), {"WORKSPACE": "workspace"})
    trt.NetworkDefinitionCreationFlag = type("Flags", (), {"EXPLICIT_BATCH": 0})
    trt.nptype = lambda dtype: np.float32
    trt.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (), {"__init__": lambda self: None})

    class Engine(object):
        def __init__(self, data):
            self.session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
            self.inputs = [i.name for i in self.session.get_inputs()]
            self.names = self.inputs + [o.name for o in self.session.get_outputs()]
            # TensorRT reports a dynamic dimension as -1 (the batch; the detector's H, W)
            self.shapes = [tuple(d if isinstance(d, int) else -1 for d in t.shape)
                           for t in list(self.session.get_inputs()) + list(self.session.get_outputs())]

        def create_execution_context(self):
            return Context(self)

    class Context(object):
        def __init__(self, engine):
            self.engine, self.shape, self.addresses = engine, None, {}

        def _outputs(self, x):
            names = self.engine.names[len(self.engine.inputs):]
            return dict(zip(names, self.engine.session.run(names, {"input": x})))

        def _shape_of(self, name):
            if name in self.engine.inputs:
                return self.shape
            return self._outputs(np.zeros(self.shape, np.float32))[name].shape  # as TensorRT infers it

        def _run(self, addresses):
            nbytes = int(np.prod(self.shape)) * 4
            x = FakeCuda.memory[int(addresses[0])][:nbytes].view(np.float32).reshape(self.shape)
            for name, out in self._outputs(x).items():
                out = np.ascontiguousarray(out, np.float32)
                FakeCuda.memory[int(addresses[self.engine.names.index(name)])][:out.nbytes] = out.view(np.uint8).ravel()
            trt.calls.append(("execute", self.shape[0] if len(self.engine.names) == 2 else tuple(self.shape)))
            return True

    if api == 10:
        Engine.num_io_tensors = property(lambda self: len(self.names))
        Engine.get_tensor_name = lambda self, i: self.names[i]
        Engine.get_tensor_mode = lambda self, n: "in" if n in self.inputs else "out"
        Engine.get_tensor_shape = lambda self, n: self.shapes[self.names.index(n)]
        Engine.get_tensor_dtype = lambda self, n: "float"
        Context.set_input_shape = lambda self, name, shape: setattr(self, "shape", shape) or True
        Context.get_tensor_shape = lambda self, name: self._shape_of(name)
        Context.set_tensor_address = lambda self, name, ptr: self.addresses.update({name: ptr})
        Context.execute_async_v3 = lambda self, stream: self._run([self.addresses[n] for n in self.engine.names])
        trt.IProgressMonitor = type("IProgressMonitor", (), {"__init__": lambda self: None})
    else:
        Engine.num_bindings = property(lambda self: len(self.names))
        Engine.get_binding_name = lambda self, i: self.names[i]
        Engine.binding_is_input = lambda self, i: i < len(self.inputs)
        Engine.get_binding_shape = lambda self, i: self.shapes[i]
        Engine.get_binding_dtype = lambda self, i: "float"
        Context.set_binding_shape = lambda self, index, shape: setattr(self, "shape", shape) or True
        Context.get_binding_shape = lambda self, index: self._shape_of(self.engine.names[index])
        Context.execute_async_v2 = lambda self, bindings, stream_handle: self._run(bindings)

    class Runtime(object):
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            try:
                return Engine(data)
            except Exception:  # TensorRT returns None for bytes it cannot load
                return None

    class Config(object):
        def __init__(self):
            self.flags, self.profiles = set(), []

        def set_flag(self, flag):
            self.flags.add(flag)

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)

        def set_calibration_profile(self, profile):
            self.calibration_profile = profile

    if api == 10:
        Config.set_memory_pool_limit = lambda self, pool, size: setattr(self, "workspace", size)
        Config.progress_monitor = None
    else:
        Config.max_workspace_size = 0

    class Builder(object):
        platform_has_fast_fp16 = True
        platform_has_fast_int8 = fast_int8

        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return types.SimpleNamespace(flags=flags, data=None)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            profile = types.SimpleNamespace(shapes={})
            profile.set_shape = lambda name, lo, opt, hi: profile.shapes.update({name: (lo, opt, hi)})
            return profile

        def build_serialized_network(self, network, config):
            trt.calls.append(("build", sorted(config.flags), config.profiles[0].shapes["input"]))
            monitor = getattr(config, "progress_monitor", None)
            if monitor is not None:
                monitor.phase_start("Building engine", None, 1)
            calibrator = getattr(config, "int8_calibrator", None)
            if calibrator is not None:  # drive it as TensorRT does: batches until None, then the cache
                count = 0
                while calibrator.get_batch(["input"]) is not None:
                    count += 1
                calibrator.write_calibration_cache(b"fake calibration table")
                trt.calls.append(("calibrated", count, calibrator.get_batch_size()))
            return network.data

    class OnnxParser(object):
        num_errors = 0

        def __init__(self, network, logger):
            self.network = network

        def parse(self, data):
            self.network.data = bytes(data)
            return True

    trt.Runtime, trt.Builder, trt.OnnxParser = Runtime, Builder, OnnxParser
    return trt


class FakeCuda(object):
    """pycuda.driver's surface as the backend uses it; device memory is numpy, pointers are ids."""
    memory = {}
    depth = 0

    class Context(object):
        def push(self):
            FakeCuda.depth += 1

        def pop(self):
            FakeCuda.depth -= 1

        def detach(self):
            FakeCuda.detached = True

    class Device(object):
        def __init__(self, index):
            pass

        def name(self):
            return "Fake GPU"

        def retain_primary_context(self):
            return FakeCuda.Context()

    class DeviceAllocation(object):
        def __init__(self, nbytes):
            FakeCuda.memory[id(self)] = np.zeros(nbytes, np.uint8)

        def __int__(self):
            return id(self)

        def free(self):
            FakeCuda.memory.pop(id(self))

    class Stream(object):
        handle = 0

        def synchronize(self):
            pass

    init = staticmethod(lambda: None)
    pagelocked_empty = staticmethod(lambda shape, dtype: np.zeros(shape, dtype))
    mem_alloc = DeviceAllocation

    @staticmethod
    def memcpy_htod_async(device, host, stream=None):
        FakeCuda.memory[int(device)][:host.nbytes] = np.ascontiguousarray(host).view(np.uint8).ravel()

    memcpy_htod = memcpy_htod_async

    @staticmethod
    def memcpy_dtoh_async(host, device, stream):
        raw = FakeCuda.memory[int(device)][:host.nbytes]
        host[...] = raw.view(host.dtype).reshape(host.shape)


def fake_runtime(folder, fail=None, pycuda=True):
    """A folder for a child process's PYTHONPATH with importable stand-ins of tensorrt (8.2 API)
    and pycuda.driver (``pycuda=False``: as where pycuda did not build); ``fail="build"``: every
    engine build fails as TensorRT's does (None). Returns the environment to add."""
    os.makedirs(str(folder))
    setup = "import sys\nsys.path.insert(0, %r)\nimport helpers\n" % os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(str(folder), "tensorrt.py"), "w") as f:
        f.write(setup + "trt = helpers.fake_tensorrt(8)\n")
        if fail == "build":
            f.write("trt.Builder.build_serialized_network = lambda self, network, config: None\n")
        f.write("sys.modules['tensorrt'] = trt\n")  # what `import tensorrt` then returns
    if pycuda:
        os.makedirs(os.path.join(str(folder), "pycuda"))
        open(os.path.join(str(folder), "pycuda", "__init__.py"), "w").close()
        with open(os.path.join(str(folder), "pycuda", "driver.py"), "w") as f:
            f.write(setup + "sys.modules['pycuda.driver'] = helpers.FakeCuda\n")
    return {"PYTHONPATH": str(folder)}


def install_fakes(monkeypatch, api, fast_int8=True):
    """Put the fake tensorrt and pycuda.driver in ``sys.modules`` for one test."""
    import sys
    import types
    trt = fake_tensorrt(api, fast_int8)
    FakeCuda.memory, FakeCuda.depth, FakeCuda.detached = {}, 0, False
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", types.SimpleNamespace(driver=FakeCuda))
    monkeypatch.setitem(sys.modules, "pycuda.driver", FakeCuda)
    return trt


def tiny_onnx(path, meta):
    """A real (untrained) classifier graph with maskgate metadata: pool -> linear -> softmax."""
    import json

    onnx = pytest.importorskip("onnx", reason="building a test model needs the onnx package (workstation)")
    from onnx import TensorProto, helper, numpy_helper
    h, w = meta["input_size"]
    n = len(meta["classes"])
    weight = np.linspace(-2, 2, 3 * n).reshape(n, 3).astype(np.float32)
    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("Gemm", ["flat", "w"], ["logits"], transB=1),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                            ["batch", 3, h, w])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", n])],
                              [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=json.dumps(value))
    onnx.save(model, path)
    return path


def tiny_classifier_onnx(path, size=32):
    """A small but real ONNX classifier with the project's metadata (conv, pool, softmax).

    Its weights are random (fixed seed): the pipeline tests check the plumbing, the
    shipped model's accuracy is measured by ``edge.evaluate``.
    """
    onnx = pytest.importorskip("onnx", reason="building a test model needs the onnx package (workstation)")
    from onnx import TensorProto, helper, numpy_helper

    from edge.infer.model_meta import make_metadata, to_string_props
    rng = np.random.RandomState(0)
    weights = [numpy_helper.from_array(rng.randn(8, 3, 3, 3).astype(np.float32) * 0.3, "w"),
               numpy_helper.from_array(rng.randn(2, 8).astype(np.float32), "fc"),
               numpy_helper.from_array(np.zeros(2, np.float32), "fb")]
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], strides=[2, 2]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "fb"], ["logits"], transB=1),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    graph = helper.make_graph(
        nodes, "tiny_mask_classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 2])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7  # readable by the onnxruntime of JetPack 4.6 too
    meta = make_metadata("tiny_test_net", ["mask", "no_mask"], (size, size), [0.5] * 3, [0.25] * 3, 0.15)
    helper.set_model_props(model, to_string_props(meta))
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path
