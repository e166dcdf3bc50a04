"""Five face landmarks (eyes, nose tip, mouth corners) from the provisioned RetinaFace ONNX.

The edge detector (``edge.detectors.retinaface``) reads only the model's boxes; the same
network also regresses five landmarks per anchor, decoded like the box centre: anchor
centre + offset * 0.1 * anchor size. Anchors come from ``anchors_for`` so that both
readers of the model agree by construction.

A face is looked for in a crop padded with context (a tight crop leaves the detector no
context, and small faces are enlarged to a size its anchors see well); the detection that
best matches the expected face is kept. Faces without a confident, large enough and
plausible detection are refused with a reason (``Skip``), which the caller counts.
"""
import collections

import cv2
import numpy as np

from edge.errors import ModelError
from edge.infer.detectors.files import default_models_dir, model_file
from edge.infer.detectors.retinaface import ONNX_FILE, VARIANCE_CENTER, anchors_for, decode, to_blob
from edge.infer.runtime import ort_session

DEFAULT_MODELS = default_models_dir()
# Landmark order of the network: left eye, right eye (image left/right), nose tip, mouth
# left, mouth right.
LEFT_EYE, RIGHT_EYE, NOSE, MOUTH_LEFT, MOUTH_RIGHT = range(5)
# Context around a known box, per side, in units of its size: kaggle853 boxes are tight
# (brow to chin), so the detector needs the hairline and some background to fire.
CONTEXT = 0.5
# The face's long side in the network input: well inside the 64/128 px anchors, and
# small faces are enlarged to it (their landmarks stay as good as their pixels allow).
WORK_SIZE = 128
# The smallest face (detector box, shorter side, source pixels) whose landmarks are trusted:
# below it the nose-to-mouth distance is 3-4 px and one pixel of error moves a mask
# from "over the nose" to "under it" (chosen by looking at the contact sheet).
MIN_FACE = 32
# Lowest detector score for a face whose landmarks are used; masked faces score lower than
# bare ones, and 0.6 kept nearly all masked faces of size while refusing smudges.
MIN_SCORE = 0.6
CANDIDATE_SCORE = 0.2  # anchors kept for matching to the expected box (the best must pass MIN_SCORE)
GREY = (127, 127, 127)

Face = collections.namedtuple("Face", "box score landmarks")  # xyxy, float, 5x2 (x, y)


class Skip(Exception):
    """This face cannot be used; ``reason`` is a short key for the skip counts."""

    def __init__(self, reason):
        Exception.__init__(self, reason)
        self.reason = reason


def decode_landmarks(pre, anchors):
    """Landmark regressions (N x 10) at ``anchors`` (cx, cy, size) -> N x 5 x 2 pixels."""
    pre = pre.reshape(-1, 5, 2)
    return anchors[:, None, :2] + pre * VARIANCE_CENTER * anchors[:, None, 2:3]


def iou(a, b):
    """Intersection over union of two xyxy boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def plausible(landmarks):
    """True for a roughly frontal, upright face: eyes above the nose above the mouth.

    Profiles and rolled faces fail (a mask placed by five points would float off them).
    """
    eyes = landmarks[:2].mean(0)
    mouth = landmarks[3:].mean(0)
    eye_dist = np.linalg.norm(landmarks[RIGHT_EYE] - landmarks[LEFT_EYE])
    if eye_dist < 1 or landmarks[RIGHT_EYE, 0] <= landmarks[LEFT_EYE, 0]:
        return False
    down = mouth - eyes
    if down[1] <= 0 or abs(down[0]) > 0.5 * down[1]:  # more than ~27 degrees of roll
        return False
    nose_depth = (landmarks[NOSE, 1] - eyes[1]) / down[1]
    nose_side = (landmarks[NOSE, 0] - eyes[0]) / eye_dist
    return 0.2 < nose_depth < 0.9 and abs(nose_side) < 0.45 and 0.5 < down[1] / eye_dist < 2.0


def crop_scaled(rgb, region, scale):
    """Cut ``region`` (xyxy, may reach outside) from ``rgb``, grey outside, resized by ``scale``.

    Returns (image, (x0, y0) its origin in ``rgb`` pixels, (sx, sy) the exact scales).
    """
    h, w = rgb.shape[:2]
    x0, y0 = int(np.floor(region[0])), int(np.floor(region[1]))
    x1, y1 = int(np.ceil(region[2])), int(np.ceil(region[3]))
    inner = rgb[max(0, y0):min(h, y1), max(0, x0):min(w, x1)]
    padded = cv2.copyMakeBorder(inner, max(0, -y0), max(0, y1 - h), max(0, -x0), max(0, x1 - w),
                                cv2.BORDER_CONSTANT, value=GREY)
    out_w, out_h = max(32, int(round((x1 - x0) * scale))), max(32, int(round((y1 - y0) * scale)))
    # Area averaging when shrinking, so that fine detail does not alias into false edges.
    interp = cv2.INTER_AREA if out_w < x1 - x0 else cv2.INTER_LINEAR
    work = cv2.resize(padded, (out_w, out_h), interpolation=interp)
    return work, (x0, y0), (out_w / float(x1 - x0), out_h / float(y1 - y0))


def turn(landmarks):
    """How far the head is turned: the nose tip's sideways offset from the midline of eyes
    and mouth, in eye distances (0 frontal, about 0.5 in three-quarter view; signed)."""
    mid = (landmarks[:2].mean(0) + landmarks[3:].mean(0)) / 2
    eye_dist = np.linalg.norm(landmarks[RIGHT_EYE] - landmarks[LEFT_EYE])
    return float((landmarks[NOSE, 0] - mid[0]) / max(eye_dist, 1e-6))


class LandmarkFinder:
    """RetinaFace in onnxruntime, for the landmarks of one face at a time."""

    def __init__(self, models_dir=DEFAULT_MODELS, min_face=MIN_FACE, min_score=MIN_SCORE, threads=1):
        path = model_file(models_dir, ONNX_FILE, "retinaface")
        self.session = ort_session(path, threads, ["CPUExecutionProvider"], what="the face landmarks")
        self.min_face, self.min_score = float(min_face), float(min_score)

    def run(self, bgr):
        """All detections in a BGR image: (boxes Nx4, scores N, landmarks Nx5x2), pixels."""
        h, w = bgr.shape[:2]
        loc, conf, pre = self.session.run(["loc", "conf", "landmarks"], {"input": to_blob(bgr)})
        anchors = anchors_for(h, w)
        if len(anchors) != conf.shape[1]:
            raise ModelError("retinaface: %d outputs for a %dx%d input, expected %d anchors"
                             % (conf.shape[1], w, h, len(anchors)))
        scores = conf[0, :, 1]
        idx = np.nonzero(scores >= CANDIDATE_SCORE)[0]
        return decode(loc[0, idx], anchors[idx]), scores[idx], decode_landmarks(pre[0, idx], anchors[idx])

    def find(self, rgb, box=None):
        """The face in ``rgb`` (HxWx3 uint8) at ``box`` (xyxy), or its largest face if None.

        Returns a ``Face`` in ``rgb`` pixels; raises ``Skip`` with the reason otherwise.
        """
        h, w = rgb.shape[:2]
        if box is None:  # a whole image: pad it, as train.facecrop does, and find the largest face
            region = (-0.25 * w, -0.25 * h, 1.25 * w, 1.25 * h)
            side = 1.5 * max(w, h)
            scale = min(640.0 / side, 4.0)
        else:
            bw, bh = box[2] - box[0], box[3] - box[1]
            if min(bw, bh) < 0.75 * self.min_face:  # the detector box is never much smaller
                raise Skip("face_too_small")
            region = (box[0] - CONTEXT * bw, box[1] - CONTEXT * bh, box[2] + CONTEXT * bw, box[3] + CONTEXT * bh)
            scale = WORK_SIZE / float(max(bw, bh))
        work, (x0, y0), (sx, sy) = crop_scaled(rgb, region, scale)
        boxes, scores, marks = self.run(np.ascontiguousarray(work[:, :, ::-1]))
        if not len(scores):
            raise Skip("no_face_detected")
        boxes = boxes / np.array([sx, sy, sx, sy], np.float32) + np.array([x0, y0, x0, y0], np.float32)
        marks = marks / np.array([sx, sy], np.float32) + np.array([x0, y0], np.float32)
        if box is None:
            areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) * (scores >= self.min_score)
            best = int(np.argmax(areas))
        else:
            overlaps = np.array([iou(b, box) for b in boxes])
            best = int(np.argmax(overlaps * scores))
            if overlaps[best] < 0.3:
                raise Skip("no_face_at_box")
        if scores[best] < self.min_score:
            raise Skip("low_confidence")
        found = boxes[best]
        if min(found[2] - found[0], found[3] - found[1]) < self.min_face:
            raise Skip("face_too_small")
        if not plausible(marks[best]):
            raise Skip("implausible_landmarks")
        return Face(tuple(float(v) for v in found), float(scores[best]), marks[best].astype(np.float32))
