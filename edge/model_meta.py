"""The device's copy of the model-metadata contract (see ``train/metadata.py``).

edge never imports train; ``tests/test_contract.py`` pins this list equal to train's.
"""
import json

CLASS_NAMES = ("mask", "no_mask", "incorrect")
REQUIRED_KEYS = ("arch", "classes", "input_size", "resize", "mean", "std", "crop_margin", "color")
RESIZE_MODES = ("letterbox",)


class MetadataError(ValueError):
    """Model metadata is missing or does not describe a usable model."""


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


def from_string_props(props, source="model"):
    """Decode string -> JSON-string pairs (ONNX ``metadata_props``, engine sidecar)."""
    meta = {}
    for key, value in props.items():
        try:
            meta[key] = json.loads(value)
        except ValueError:
            meta[key] = value
    return validate(meta, source)
