"""OpenCV's res10 SSD face detector (Caffe), run by ``cv2.dnn``."""
import cv2
import numpy as np

from edge.errors import ModelError

from .base import Detector, empty
from .files import model_file

PROTOTXT = "deploy.prototxt"
CAFFEMODEL = "res10_300x300_ssd_iter_140000.caffemodel"
# The BGR mean the network was trained with (OpenCV's face_detector sample).
MEAN_BGR = (104.0, 177.0, 123.0)

# Box style of the kaggle853 annotations (they start at the brows, detectors at the hairline),
# as the median side offsets in units of the detector's box, fitted on the train split by
# `bench/detectors.py --fit-box-adjust`: matching it lifts recall at IoU 0.5 and gives the
# classifier crops framed like its training crops.
BOX_ADJUST = (0.018, 0.205, 0.005, 0.036)


class SsdDetector(Detector):
    """res10 SSD: the frame squeezed to ``input_size`` x ``input_size`` (300, as trained).

    ``square=False`` keeps the frame's aspect ratio instead (long side ``input_size``): the
    network is fully convolutional, and a larger unsquashed input finds smaller faces at
    more cost.
    """
    name = "ssd"

    def __init__(self, models_dir, input_size=300, square=True, box_adjust=BOX_ADJUST, **common):
        Detector.__init__(self, input_size=input_size, box_adjust=box_adjust, **common)
        prototxt = model_file(models_dir, PROTOTXT, self.name)
        weights = model_file(models_dir, CAFFEMODEL, self.name)
        try:
            self.net = cv2.dnn.readNetFromCaffe(prototxt, weights)
        except cv2.error as exc:
            raise ModelError("ssd: cannot load %s / %s (%s); run `make models` to provision "
                             "them again" % (prototxt, weights, str(exc).strip()))
        self.square = bool(square)

    def scaled(self, frame):
        """The frame as is: ``blobFromImage`` resizes it (squeezed or not) in one pass."""
        return frame

    def _detect(self, image, scale):
        h, w = image.shape[:2]
        if self.square:
            size = (self.input_size, self.input_size)
        else:
            s = float(self.input_size) / max(h, w)
            size = (int(round(w * s)), int(round(h * s)))
        blob = cv2.dnn.blobFromImage(image, 1.0, size, MEAN_BGR, swapRB=False, crop=False)
        self.net.setInput(blob)
        out = self.net.forward().reshape(-1, 7)  # [image, class, score, x1, y1, x2, y2]
        out = out[out[:, 2] >= self.pass_confidence]
        if not len(out):
            return empty()
        # Corners are fractions of the (resized) input, hence of the frame.
        boxes = out[:, 3:7] * np.array([w, h, w, h], np.float32)
        return boxes, out[:, 2]
