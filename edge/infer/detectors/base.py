"""The detector interface: frame checks, input scaling, thresholds and NMS, shared by all."""
import cv2
import numpy as np

from edge.errors import ConfigError
from edge.infer.track import contained, greedy_match, iou_matrix

# The confidence of a detector run without one (detector.confidence: null) whose file names
# no operating point of its own (the fine-tuned RetinaFace's does: retinaface_format).
DEFAULT_CONFIDENCE = 0.3


def check_frame(frame):
    """Return ``frame`` as an HxWx3 uint8 BGR array, or raise ValueError saying what is wrong.

    A grey (HxW or HxWx1) frame is converted; anything else is rejected, so one bad
    frame gives an error the service can log and skip instead of a crash deep in OpenCV.
    """
    if not isinstance(frame, np.ndarray):
        raise ValueError("frame must be a numpy array, got %s" % type(frame).__name__)
    if frame.dtype != np.uint8:
        raise ValueError("frame must be uint8, got %s" % frame.dtype)
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim == 2:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError("frame must be HxWx3 BGR, got shape %s" % (frame.shape,))
    if frame.shape[0] < 2 or frame.shape[1] < 2:
        raise ValueError("frame is empty: shape %s" % (frame.shape,))
    # A cropped or flipped view: older OpenCV bindings (4.1 on the Nano) refuse non-contiguous arrays.
    return np.ascontiguousarray(frame)


def nms(boxes, scores, iou_threshold):
    """Greedy non-maximum suppression; indices of the kept boxes, best score first.

    Plain numpy (the same result as ``cv2.dnn.NMSBoxes``, whose Python signature differs
    between OpenCV 4.1 on the Nano and 4.x here); face counts are small, so it is cheap.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, np.float32), kind="mergesort")  # stable, numpy 1.13 too
    areas = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        x1 = np.maximum(boxes[best, 0], boxes[rest, 0])
        y1 = np.maximum(boxes[best, 1], boxes[rest, 1])
        x2 = np.minimum(boxes[best, 2], boxes[rest, 2])
        y2 = np.minimum(boxes[best, 3], boxes[rest, 3])
        inter = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
        iou = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, np.int64)


def empty():
    """No detections: (0x4 float32 boxes, 0 float32 scores)."""
    return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)


def resized(frame, scale):
    """``frame`` scaled by ``scale`` (itself when about 1)."""
    if abs(scale - 1) < 1e-3:
        return frame
    h, w = frame.shape[:2]
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    # Area averaging when shrinking keeps small faces from aliasing away.
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def sides(boxes):
    """The longest side of each xyxy box."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


# The close-up pass (Detector(close_up_pass=True)), in units of the detector's largest face
# (``largest_face``, detector input pixels): a box this large in the first pass starts a
# second one at half the scale; boxes of the second pass this large are kept.
CLOSE_UP_TRIGGER = 0.5
CLOSE_UP_MIN = 0.75
# A box with this much of its area inside a larger, confident box (of at least the trigger size,
# twice its area, scored at least HOLDER_SCORE) is taken for a part of that face: an eye, a
# mask, half a face. A low-scored large box is more often a false alarm around real faces.
PART_INSIDE = 0.6
HOLDER_SCORE = 0.5


def merge_close_ups(boxes, scores, whole, whole_scores, nms_iou, min_holder):
    """A frame's detections with the close-up pass's large faces ``whole`` in place of their parts.

    A first-pass box mostly inside (``PART_INSIDE``) or overlapping (``nms_iou``) a face found
    whole gives way to it (a face found whole scored under ``HOLDER_SCORE`` is left out: the
    first pass stands); then a box mostly inside a confident box of at least ``min_holder``
    pixels (longest side, frame pixels) with twice its area is dropped as a part of that
    face. Best score first.
    """
    whole = np.asarray(whole, np.float32).reshape(-1, 4)
    whole_scores = np.asarray(whole_scores, np.float32).reshape(-1)
    confident = whole_scores >= HOLDER_SCORE
    whole, whole_scores = whole[confident], whole_scores[confident]
    if len(whole):
        replaced = ((contained(boxes, whole) >= PART_INSIDE) | (iou_matrix(boxes, whole) > nms_iou)).any(axis=1)
        boxes = np.concatenate([boxes[~replaced], whole])
        scores = np.concatenate([scores[~replaced], whole_scores])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    confident_large = (sides(boxes) >= min_holder) & (scores >= HOLDER_SCORE)
    holders = confident_large[None, :] & (areas[None, :] >= 2 * areas[:, None])
    part = ((contained(boxes, boxes) >= PART_INSIDE) & holders).any(axis=1)
    order = np.argsort(-scores[~part], kind="mergesort")
    return boxes[~part][order], scores[~part][order]


# The flip pass (Detector(flip_pass=True)): a face seen in one view only keeps this share of its
# score, so that each view is run down to this share of the confidence.
ONE_VIEW_SHARE = 0.5
# Boxes of the two views overlapping this much are one face.
SAME_FACE_IOU = 0.4


def merge_views(boxes, scores, mirrored, mirrored_scores, nms_iou):
    """Detections of a frame and of its mirror image (boxes already mapped back) as one set.

    A face found in both views gets their score-weighted mean box and their mean score; one
    found in a single view keeps ``ONE_VIEW_SHARE`` of its score (the other view gave it
    nothing), which is what holds back the false alarms only one view makes. NMS at
    ``nms_iou`` last; best score first.
    """
    pairs = greedy_match(iou_matrix(boxes, mirrored), SAME_FACE_IOU)
    paired, mirrored_paired = [i for i, _ in pairs], [j for _, j in pairs]
    a, b = scores[paired][:, None], mirrored_scores[mirrored_paired][:, None]
    mean_boxes = (boxes[paired] * a + mirrored[mirrored_paired] * b) / np.maximum(a + b, 1e-9)
    alone = np.setdiff1d(np.arange(len(scores)), paired)
    mirrored_alone = np.setdiff1d(np.arange(len(mirrored_scores)), mirrored_paired)
    out_boxes = np.concatenate([mean_boxes.reshape(-1, 4), boxes[alone], mirrored[mirrored_alone]]).astype(np.float32)
    out_scores = np.concatenate([((a + b) / 2).reshape(-1), scores[alone] * ONE_VIEW_SHARE,
                                 mirrored_scores[mirrored_alone] * ONE_VIEW_SHARE]).astype(np.float32)
    keep = nms(out_boxes, out_scores, nms_iou)
    return out_boxes[keep], out_scores[keep]


class Detector(object):
    """A face detector: ``detect(frame_bgr) -> (boxes Nx4 xyxy float32 pixels, scores N)``.

    ``confidence``: lowest score kept (0..1; None: ``DEFAULT_CONFIDENCE``); ``min_size``:
    smallest face kept, longest side in frame pixels; ``nms_iou``: overlap above which the
    lower-scored box is dropped;
    ``input_size``: long side in pixels the frame is scaled to (up or down) before the
    detector sees it, None for the frame's own size; ``max_upscale``: the most a small frame
    is enlarged on the way (None: no limit); ``close_up_pass``: when a first pass finds
    something large, look again at half the scale for faces too large for the detector to
    find whole (detectors with a ``largest_face`` only); ``flip_pass``: look at the frame's
    mirror image too and merge the two views (``merge_views``: twice the time, for still
    photos); ``box_adjust``: (dx1, dy1, dx2, dy2)
    added to each box's sides in units of its width/height, None for the raw boxes. Boxes always come back in the
    coordinates of the frame given, clipped to it, best score first.
    Subclasses implement ``_detect(image, scale) -> (boxes, scores)`` in ``image`` pixels
    (``scale``: image size / frame size).
    """
    name = None
    # The largest face (longest side, input pixels) the network finds whole; None: no limit.
    largest_face = None

    def __init__(self, confidence=0.5, min_size=10, nms_iou=0.4, input_size=None, box_adjust=None, max_upscale=None,
                 close_up_pass=False, flip_pass=False):
        if confidence is None:
            confidence = DEFAULT_CONFIDENCE
        if not 0 <= float(confidence) <= 1:
            raise ConfigError("detector confidence %r: need 0 <= confidence <= 1" % (confidence,))
        if float(min_size) < 0:
            raise ConfigError("detector min_size %r: need >= 0 pixels" % (min_size,))
        if not 0 < float(nms_iou) <= 1:
            raise ConfigError("detector nms_iou %r: need 0 < nms_iou <= 1" % (nms_iou,))
        if input_size is not None and int(input_size) < 32:
            raise ConfigError("detector input_size %r: need a long side of >= 32 pixels, or "
                              "null for the frame's size" % (input_size,))
        if max_upscale is not None and not float(max_upscale) >= 1:
            raise ConfigError("detector max_upscale %r: need >= 1 (1: never enlarge), or null for no "
                              "limit" % (max_upscale,))
        if close_up_pass and self.largest_face is None:
            raise ConfigError("detector close_up_pass: the %s detector has no largest face to look "
                              "again for" % self.name)
        if box_adjust is not None and len(box_adjust) != 4:
            raise ConfigError("detector box_adjust %r: need four numbers (dx1, dy1, dx2, dy2) "
                              "or null" % (box_adjust,))
        self.box_adjust = None if box_adjust is None else np.asarray(box_adjust, np.float32)
        self.confidence = float(confidence)
        self.min_size = float(min_size)
        self.nms_iou = float(nms_iou)
        self.input_size = None if input_size is None else int(input_size)
        self.max_upscale = None if max_upscale is None else float(max_upscale)
        self.close_up_pass = bool(close_up_pass)
        self.flip_pass = bool(flip_pass)
        # The lowest score each pass reports: with two views, a face seen in one only is halved.
        self.pass_confidence = self.confidence * (ONE_VIEW_SHARE if self.flip_pass else 1.0)

    def __repr__(self):
        return ("<%s detector confidence=%g min_size=%g nms_iou=%g input_size=%s max_upscale=%s close_up_pass=%s "
                "flip_pass=%s>" % (self.name, self.confidence, self.min_size, self.nms_iou, self.input_size,
                                   self.max_upscale, self.close_up_pass, self.flip_pass))

    def detect(self, frame_bgr):
        """Faces in one BGR frame: (boxes float32 Nx4 xyxy pixels, scores float32 N)."""
        frame = check_frame(frame_bgr)
        boxes, scores = self._look(frame)
        if self.flip_pass:
            width = frame.shape[1]
            mirrored, mirrored_scores = self._look(np.ascontiguousarray(frame[:, ::-1]))
            mirrored = np.stack([width - mirrored[:, 2], mirrored[:, 1], width - mirrored[:, 0], mirrored[:, 3]], 1)
            boxes, scores = merge_views(boxes, scores, mirrored.reshape(-1, 4), mirrored_scores, self.nms_iou)
            keep = scores >= self.confidence
            boxes, scores = boxes[keep], scores[keep]
        return boxes, scores

    def _look(self, frame):
        """One view of a checked frame: the detector's pass (and the close-up pass where set)."""
        image = self.scaled(frame)
        boxes, scores = self._detect_frame(frame, image)
        scale = float(image.shape[1]) / frame.shape[1]
        if self.close_up_pass and len(scores) and sides(boxes).max() * scale >= self.largest_face * CLOSE_UP_TRIGGER:
            # Something large: look again at half the scale for a face too large to be found whole.
            whole, whole_scores = self._detect_frame(frame, resized(frame, scale / 2))
            large = sides(whole) * scale >= self.largest_face * CLOSE_UP_MIN
            boxes, scores = merge_close_ups(boxes, scores, whole[large], whole_scores[large], self.nms_iou,
                                            self.largest_face * CLOSE_UP_TRIGGER / scale)
        return boxes, scores

    def _detect_frame(self, frame, image):
        """Detect on ``image`` (``frame`` resized), post-processed in ``frame``'s coordinates."""
        h, w = frame.shape[:2]
        boxes, scores = self._detect(image, float(image.shape[1]) / w)
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        scores = np.asarray(scores, np.float32).reshape(-1)
        if image is not frame:
            sx, sy = float(w) / image.shape[1], float(h) / image.shape[0]
            boxes = boxes * np.array([sx, sy, sx, sy], np.float32)
        return self.postprocess(boxes, scores, w, h)

    def scaled(self, frame):
        """The frame resized so that its long side is ``input_size`` (itself when None),
        enlarged by at most ``max_upscale``."""
        if self.input_size is None:
            return frame
        scale = float(self.input_size) / max(frame.shape[:2])
        if self.max_upscale is not None:
            scale = min(scale, self.max_upscale)
        return resized(frame, scale)

    def postprocess(self, boxes, scores, width, height):
        """Clip to the frame, apply the pass's confidence and the size limit, then NMS; best first."""
        if not len(scores):
            return empty()
        boxes = boxes.copy()
        if self.box_adjust is not None:
            wh = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)
            boxes += np.tile(wh, 2) * self.box_adjust
        np.clip(boxes[:, 0::2], 0, width, out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], 0, height, out=boxes[:, 1::2])
        bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        ok = (scores >= self.pass_confidence) & (bw > 0) & (bh > 0) & (np.maximum(bw, bh) >= self.min_size)
        boxes, scores = boxes[ok], scores[ok]
        keep = nms(boxes, scores, self.nms_iou)
        return boxes[keep].astype(np.float32), scores[keep].astype(np.float32)

    def _detect(self, image, scale):
        raise NotImplementedError

    def close(self):
        """Release the model (nothing to do for most detectors)."""
