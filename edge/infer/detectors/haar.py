"""OpenCV's Haar cascade (frontal face): no model file to provision, fast, misses masks."""
import cv2
import numpy as np

from edge.errors import ModelError
from edge.infer.detectors.files import HAAR_DIRS, HAAR_FILE, find_haar

from .base import Detector, empty

# Box style of the kaggle853 annotations (they start at the brows, detectors at the hairline),
# as the median side offsets in units of the detector's box, fitted on the train split by
# `bench/detectors.py --fit-box-adjust`: matching it lifts recall at IoU 0.5 and gives the
# classifier crops framed like its training crops.
BOX_ADJUST = (0.102, 0.184, -0.096, 0.070)


class HaarDetector(Detector):
    """``haarcascade_frontalface_default`` through ``detectMultiScale3``.

    The score is the logistic of the cascade's last-stage weight (``levelWeights``): a
    ranking, with 0.5 where the weight is zero. Options: ``scale_factor`` (pyramid step),
    ``min_neighbors`` (overlapping hits needed: the cascade's own false-positive control),
    ``cascade`` (another cascade file), and the common ``input_size``.
    """
    name = "haar"

    def __init__(self, models_dir=None, scale_factor=1.1, min_neighbors=5, cascade=None,
                 box_adjust=BOX_ADJUST, **common):
        Detector.__init__(self, box_adjust=box_adjust, **common)
        path = cascade or find_haar(HAAR_FILE)
        if not path:
            raise ModelError("haar: this OpenCV has no %s (searched cv2.data and %s); install "
                             "opencv-python-headless<5 or pass cascade=PATH"
                             % (HAAR_FILE, ", ".join(HAAR_DIRS)))
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise ModelError("haar: cannot load the cascade %s" % path)
        self.path = path
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)

    def _detect(self, image, scale):
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        # min_size is in frame pixels; the cascade works at this image's scale.
        side = max(1, int(self.min_size * scale))
        rects, _, weights = self.cascade.detectMultiScale3(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(side, side), outputRejectLevels=True)
        if len(rects) == 0:
            return empty()
        rects = np.asarray(rects, np.float32).reshape(-1, 4)
        boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
        scores = 1.0 / (1.0 + np.exp(-np.asarray(weights, np.float32).reshape(-1)))
        return boxes, scores
