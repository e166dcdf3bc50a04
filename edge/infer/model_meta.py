"""The model-metadata contract that train, export and edge share.

A checkpoint, an ONNX model (``metadata_props``) and a TensorRT engine sidecar all carry
the same keys, so that nothing downstream retypes a constant. It is defined once,
here on the device side (edge never imports train), and train and export read it.

| key           | meaning                                                         |
|---------------|-----------------------------------------------------------------|
| arch          | architecture name in ``train.models.ARCHS``                      |
| classes       | class names in output order, from ``CLASS_NAMES``                |
| input_size    | [H, W] of the network input                                      |
| resize        | ``letterbox``: pad to the input's aspect ratio with the mean     |
|               | colour, then bilinear resize (area-averaged when shrinking)      |
| mean, std     | RGB normalization on 0..1 pixels                                 |
| crop_margin   | fraction of the face box's width/height added on each side       |
| color         | channel order of the network input, always ``RGB``               |

Optional, written by ``export.onnx --tta-flip``: ``tta_flip`` (true: the graph averages each
face with its mirror image, so the caller does nothing more).
"""
import json

from edge.errors import MetadataError  # noqa: F401 (raised here, part of the contract)

FORMAT = "maskgate-model/1"
CLASS_NAMES = ("mask", "no_mask", "incorrect")
REQUIRED_KEYS = ("arch", "classes", "input_size", "resize", "mean", "std", "crop_margin", "color")
RESIZE_MODES = ("letterbox",)


def make_metadata(arch, classes, input_size, mean, std, crop_margin, resize="letterbox", **extra):
    """Build and validate a metadata dict; ``extra`` keys (metrics, data summary...) ride along."""
    meta = {
        "format": FORMAT,
        "arch": arch,
        "classes": list(classes),
        "input_size": [int(input_size[0]), int(input_size[1])],
        "resize": resize,
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "crop_margin": float(crop_margin),
        "color": "RGB",
    }
    meta.update(extra)
    validate(meta)
    return meta


def validate(meta, source="model"):
    """Raise ``MetadataError`` naming every problem with ``meta``; return it unchanged."""
    problems = ["missing key %r" % key for key in REQUIRED_KEYS if key not in meta]
    if not problems:
        unknown = [c for c in meta["classes"] if c not in CLASS_NAMES]
        if unknown or len(meta["classes"]) < 2:
            problems.append("classes %r: need two or more of %s" % (meta["classes"], list(CLASS_NAMES)))
        if len(meta["input_size"]) != 2 or min(meta["input_size"]) < 8:
            problems.append("input_size %r: need [H, W] of at least 8 px" % (meta["input_size"],))
        if meta["resize"] not in RESIZE_MODES:
            problems.append("resize %r: accepted %s" % (meta["resize"], list(RESIZE_MODES)))
        if len(meta["mean"]) != 3 or len(meta["std"]) != 3 or min(meta["std"]) <= 0:
            problems.append("mean/std must be three RGB values with std > 0")
        if not 0 <= float(meta["crop_margin"]) < 1:
            problems.append("crop_margin %r: need 0 <= margin < 1" % (meta["crop_margin"],))
        if meta["color"] != "RGB":
            problems.append("color %r: only RGB is supported" % (meta["color"],))
    if problems:
        raise MetadataError("%s metadata is not usable: %s" % (source, "; ".join(problems)))
    return meta


def to_string_props(meta):
    """Encode metadata as string -> JSON string pairs (ONNX ``metadata_props``, sidecars)."""
    return {key: json.dumps(value) for key, value in meta.items()}


def from_string_props(props, source="model"):
    """Decode string -> JSON-string pairs (ONNX ``metadata_props``, engine sidecar)."""
    meta = {}
    for key, value in props.items():
        try:
            meta[key] = json.loads(value)
        except ValueError:
            meta[key] = value
    return validate(meta, source)
