"""FLOPs of the models from their graphs, and a Jetson Nano time estimate from them.

``onnx_flops`` counts multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul from
the tensor shapes that ONNX shape inference gives (batch 1, the input size you name) and
reports FLOPs = 2 x MACs; element-wise layers, pooling and activations are left out (a
few percent in these networks). It needs the ``onnx`` package (the workstation has it; on
the device it is optional). The res10 SSD is a Caffe model: OpenCV's own
``Net.getFLOPS`` counts it. Haar cascades are not a network: no count.

The Nano estimate divides FLOPs by the GPU's 472 GFLOPS FP16 peak at a stated
efficiency: it is an ESTIMATE until measured on a device (small batches of small images
rarely reach more than a third of the peak).
"""
import os

NANO_PEAK_FLOPS = 472e9  # FP16, 128 Maxwell cores at 921.6 MHz
EFFICIENCIES = (0.25, 0.40)


def onnx_flops(path, input_shape):
    """{"flops", "macs", "by_op": {op: flops}} of one inference of the ONNX model at ``path``.

    ``input_shape``: (N, C, H, W) of its (first) input; dynamic dimensions are fixed to it.
    Raises ImportError without the onnx package.
    """
    import onnx
    from onnx import shape_inference

    model = onnx.load(path)
    graph = model.graph
    initializers = set(t.name for t in graph.initializer)
    inputs = [i for i in graph.input if i.name not in initializers]
    dims = inputs[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, input_shape):
        dim.ClearField("dim_param")
        dim.dim_value = int(value)
    model = shape_inference.infer_shapes(model)
    shapes = {}
    for info in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        shape = [d.dim_value if d.HasField("dim_value") else None for d in info.type.tensor_type.shape.dim]
        shapes[info.name] = shape
    for tensor in model.graph.initializer:
        shapes[tensor.name] = list(tensor.dims)
    by_op = {}
    for node in model.graph.node:
        macs = _node_macs(node, shapes)
        if macs:
            by_op[node.op_type] = by_op.get(node.op_type, 0) + macs
    total = sum(by_op.values())
    return {"flops": 2 * total, "macs": total,
            "by_op": dict((k, 2 * v) for k, v in sorted(by_op.items()))}


def _prod(values):
    out = 1
    for v in values:
        out *= int(v)
    return out


def _known(*shapes):
    return all(s is not None and all(d for d in s) for s in shapes)


def _node_macs(node, shapes):
    """Multiply-accumulates of one node from its input/output shapes (0 when unknown)."""
    op = node.op_type
    if op in ("Conv", "ConvTranspose"):
        weight = shapes.get(node.input[1])
        out = shapes.get(node.output[0])
        inp = shapes.get(node.input[0])
        if not _known(weight, out, inp):
            return 0
        if op == "Conv":
            # weight (Cout, Cin/group, kh, kw): every output element costs Cin/group*kh*kw.
            return _prod(out) * _prod(weight[1:])
        # ConvTranspose: every input element is spread over Cout/group*kh*kw outputs.
        return _prod(inp) * _prod(weight[1:])
    if op == "Gemm":
        a, b = shapes.get(node.input[0]), shapes.get(node.input[1])
        if not _known(a, b):
            return 0
        attrs = dict((x.name, x.i) for x in node.attribute)
        m, k = (a[1], a[0]) if attrs.get("transA") else (a[0], a[1])
        n = b[0] if attrs.get("transB") else b[1]
        return m * k * n
    if op == "MatMul":
        a, b, out = shapes.get(node.input[0]), shapes.get(node.input[1]), shapes.get(node.output[0])
        if not _known(a, b, out):
            return 0
        k = a[-1]
        return _prod(out) * k
    return 0


def caffe_flops(prototxt, caffemodel, input_shape):
    """FLOPs of a Caffe model as OpenCV counts them (``cv2.dnn.Net.getFLOPS``)."""
    import cv2
    net = cv2.dnn.readNetFromCaffe(prototxt, caffemodel)
    return int(net.getFLOPS(tuple(int(v) for v in input_shape)))


def detector_flops(detector, frame_size, models_dir=None):
    """{"flops", "input", "counter"} of one detection on a (width, height) frame, or None.

    None for Haar (not a network); {"flops": None, "error"} when the counter is
    unavailable (no onnx package on the device). ``models_dir``: the detector files
    (default: edge.infer.detect's).
    """
    name = getattr(detector, "name", None)
    width, height = frame_size
    if models_dir is None:
        from edge.infer.detectors.files import default_models_dir
        models_dir = default_models_dir()
    try:
        if name == "retinaface":
            from edge.infer.detectors.retinaface import ONNX_FILE
            side = detector.input_size or max(width, height)
            scale = float(side) / max(width, height)
            h, w = int(round(height * scale)), int(round(width * scale))
            return {"flops": onnx_flops(os.path.join(models_dir, ONNX_FILE), (1, 3, h, w))["flops"],
                    "input": [h, w], "counter": "onnx graph"}
        if name == "ssd":
            from edge.infer.detectors import ssd
            side = detector.input_size or 300
            files = [os.path.join(models_dir, f) for f in (ssd.PROTOTXT, ssd.CAFFEMODEL)]
            return {"flops": caffe_flops(files[0], files[1], (1, 3, side, side)),
                    "input": [side, side], "counter": "opencv getFLOPS"}
    except (ImportError, AttributeError, IOError, OSError) as exc:
        return {"flops": None, "error": str(exc)}
    return None


def nano_ms(flops, efficiency):
    """Estimated milliseconds on a Jetson Nano GPU for ``flops`` at ``efficiency`` of its peak."""
    if not flops:
        return None
    return 1000.0 * flops / (NANO_PEAK_FLOPS * efficiency)
