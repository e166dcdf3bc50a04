"""The engine file format: an engine is opaque, so ``ENGINE.json`` beside it says what it is.

An engine file runs only on the TensorRT version and GPU that built it, and says nothing
about the model, so the builder (``edge.infer.classify.engine``) writes a sidecar: the ONNX
metadata, the ONNX sha256, TensorRT version, GPU name, precision and max batch, and
``kind``: ``classifier`` (the default, for sidecars written before the detector had
engines) or ``face-detector`` (``edge.infer.detectors.retinaface_trt``). Loading
checks the sidecar first and refuses, with the rebuild command, an engine from elsewhere.
Standard library only: readable anywhere, tested without TensorRT.
"""
import json
import os

from edge.common import atomic_write
from edge.errors import ModelError
from edge.infer.model_meta import MetadataError, validate

SIDECAR_FORMAT = "maskgate-engine/1"
SIDECAR_KEYS = ("meta", "onnx_sha256", "tensorrt", "gpu", "precision", "max_batch")


def sidecar_path(engine_path):
    """Where an engine's metadata lives: ``ENGINE.json``."""
    return engine_path + ".json"


def write_sidecar(engine_path, info):
    """Write the sidecar atomically; ``info`` holds ``SIDECAR_KEYS`` (and any notes)."""
    missing = [k for k in SIDECAR_KEYS if k not in info]
    if missing:
        raise ValueError("sidecar is missing %s" % ", ".join(missing))
    return atomic_write(sidecar_path(engine_path),
                        json.dumps(dict(info, format=SIDECAR_FORMAT), indent=2, sort_keys=True))


def read_sidecar(engine_path, kind="classifier"):
    """Read and check the sidecar of a ``kind`` engine; ``ModelError`` naming what is wrong."""
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
    found = info.get("kind", "classifier")
    if found != kind:
        raise ModelError("%s is the engine of a %s, not of a %s" % (engine_path, found, kind))
    if kind == "classifier":
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
