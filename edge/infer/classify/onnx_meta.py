"""Read an ONNX model's maskgate metadata without the onnx package (torch-free, Python 3.6).

The Jetson has TensorRT but usually neither ``onnx`` nor ``onnxruntime``; the engine
sidecar still needs the model's metadata. An ONNX file is one protobuf ``ModelProto``;
its ``metadata_props`` (field 14) are ``StringStringEntryProto`` messages (key = 1,
value = 2). Walking the top-level fields is twenty lines, so that is what we do.
"""
from edge.infer.model_meta import MetadataError, from_string_props

_METADATA_PROPS, _GRAPH, _IR_VERSION = 14, 7, 1


def _varint(buf, pos):
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf):
    """Yield ``(field_number, value)`` for each top-level field of a protobuf message."""
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = _varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = buf[pos:pos + size], pos + size
        else:
            raise ValueError("protobuf wire type %d" % wire)
        if pos > end:
            raise ValueError("truncated message")
        yield field, value


def read_metadata_props(path):
    """The ``metadata_props`` of an ONNX file as a str -> str dict; ``MetadataError`` if not ONNX."""
    with open(path, "rb") as f:
        buf = memoryview(f.read())  # slices of a memoryview do not copy the (large) graph
    props, seen = {}, set()
    try:
        for field, value in _fields(buf):
            seen.add(field)
            if field == _METADATA_PROPS:
                entry = dict(_fields(value))
                props[bytes(entry.get(1, b"")).decode("utf-8")] = bytes(entry.get(2, b"")).decode("utf-8")
    except (IndexError, ValueError, TypeError) as exc:
        raise MetadataError("%s is not an ONNX model (%s)" % (path, exc))
    if _GRAPH not in seen or _IR_VERSION not in seen:
        raise MetadataError("%s is not an ONNX model (no graph)" % path)
    return props


def read_onnx_metadata(path):
    """The model metadata of an exported ONNX file, validated against the contract.

    Raises ``MetadataError`` when the file is not ONNX or carries no maskgate metadata
    (an ONNX model from elsewhere): re-export it with ``python -m export.onnx``.
    """
    props = read_metadata_props(path)
    if "arch" not in props and "classes" not in props:
        raise MetadataError("%s has no maskgate metadata (arch, classes, input_size, mean/std...); "
                            "export it from a checkpoint with: python -m export.onnx CHECKPOINT" % path)
    return from_string_props(props, source=path)
