"""MTCNN (Zhang et al. 2016, the seed paper's detector): a cascade of three small nets in onnxruntime.

P-Net scans an image pyramid (a 12 px window every 2 px) for face proposals; R-Net (24 px
crops) and O-Net (48 px crops) re-score and refine them, and O-Net gives five landmarks.
The weights are facenet-pytorch 2.6.0's (MIT), exported on a workstation by ``python -m
export.mtcnn`` (torch); the device only reads the three ONNX files, whose metadata says
the colour order and normalization (nothing is retyped here).

The steps, thresholds (0.6, 0.7, 0.7) and NMS overlaps follow facenet-pytorch's
``detect_face`` (davidsandberg/facenet's port of the authors' code), in 0-based pixel
coordinates, with two choices of the original code where facenet-pytorch departs from it:
crops reaching past the frame are zero-padded (facenet-pytorch cuts them, which stretches
faces at the border), and images are resized with OpenCV's area interpolation.
"""
import json
import math

import cv2
import numpy as np

from edge.errors import ConfigError, ModelError
from edge.infer.runtime import ort_session

from .base import Detector, empty, nms
from .files import MTCNN_FILES, model_file

FORMAT = "maskgate-detector/1"
STAGES = ("pnet", "rnet", "onet")
FILES = dict(zip(STAGES, MTCNN_FILES))
EXPORT_HINT = ("export them on a machine with torch: `python -m export.mtcnn --out %s` (`make mtcnn`), "
               "then copy the three mtcnn_*.onnx files there")
THRESHOLDS = (0.6, 0.7, 0.7)  # face probability kept after P-, R- and O-Net
FACTOR = 0.709  # pyramid step: each level 0.709 of the last (half the area)
# NMS overlaps (facenet-pytorch): within one pyramid level, across levels, after R-Net;
# after O-Net the overlap is measured over the smaller box ("Min"), which drops a face
# box nested in a larger one.
NMS_LEVEL, NMS_LEVELS, NMS_RNET, NMS_ONET = 0.5, 0.7, 0.7, 0.7
# Smallest face the pyramid searches, in detector-input pixels, when min_size asks for less
# (min_size 0): a 3x upscale for P-Net's 12 px window.
MIN_FACE = 4.0
# Crops per R-/O-Net run: bounds memory on a frame with thousands of proposals.
BATCH = 512

# Box style of the kaggle853 annotations (they start at the brows and end below the chin,
# MTCNN's boxes at the forehead and the mouth), as the median side offsets in units of the
# detector's box, fitted on the train split by `bench/detectors.py --fit-box-adjust`
# (1,781 matched faces): it lifts recall at IoU 0.5 and frames crops as the classifier's.
BOX_ADJUST = (0.027, 0.185, 0.070, 0.114)


def read_metadata(props):
    """ONNX metadata (``metadata_props`` entries or an onnxruntime map) -> dict of JSON values."""
    items = props.items() if hasattr(props, "items") else ((p.key, p.value) for p in props)
    meta = {}
    for key, value in items:
        try:
            meta[key] = json.loads(value)
        except ValueError:
            meta[key] = value
    return meta


class Stage(object):
    """One of the three nets: its onnxruntime session and the preprocessing its metadata states."""

    def __init__(self, path, stage, threads=None, providers=None):
        self.session = ort_session(path, threads, providers, what="the mtcnn detector")
        meta = read_metadata(self.session.get_modelmeta().custom_metadata_map)
        problems = []
        if meta.get("format") != FORMAT or meta.get("stage") != stage:
            problems.append("format %r stage %r, expected %r %r"
                            % (meta.get("format"), meta.get("stage"), FORMAT, stage))
        if meta.get("color") not in ("RGB", "BGR"):
            problems.append("color %r" % (meta.get("color"),))
        missing = [k for k in ("mean", "scale", "window", "outputs") + (("stride",) if stage == "pnet" else ())
                   if k not in meta]
        if missing:
            problems.append("no %s" % ", ".join(missing))
        if problems:
            raise ModelError("%s is not an MTCNN %s file of export.mtcnn (%s): export it again with "
                             "`python -m export.mtcnn --force`" % (path, stage, "; ".join(problems)))
        self.path, self.meta = path, meta
        self.swap = meta["color"] == "RGB"  # frames are BGR
        self.mean, self.scale = float(meta["mean"]), float(meta["scale"])
        self.window = int(meta["window"])
        self.stride = int(meta.get("stride", 0))  # P-Net's step between windows
        self.input = self.session.get_inputs()[0].name
        self.outputs = list(meta["outputs"])

    def blob(self, images):
        """uint8 BGR NxHxWx3 -> the net's normalized NCHW float32 batch."""
        x = images[..., ::-1] if self.swap else images
        x = (x.astype(np.float32) - self.mean) * self.scale
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def run(self, images):
        """{output name: array} for a uint8 BGR batch, in runs of at most BATCH images."""
        parts = [self.session.run(self.outputs, {self.input: self.blob(images[i:i + BATCH])})
                 for i in range(0, len(images), BATCH)]
        return dict((name, np.concatenate([p[k] for p in parts])) for k, name in enumerate(self.outputs))


def pyramid(height, width, min_face, factor=FACTOR, window=12):
    """Scales at which P-Net's ``window`` sees faces from ``min_face`` px up to the image's short side."""
    scale = float(window) / min_face
    side = min(height, width) * scale
    scales = []
    while side >= window:
        scales.append(scale)
        scale, side = scale * factor, side * factor
    return scales


def calibrate(boxes, offsets):
    """Boxes moved by the nets' side offsets (units of the box's width/height)."""
    return boxes + offsets * np.tile(boxes[:, 2:4] - boxes[:, 0:2], 2)


def square(boxes):
    """The square of side max(width, height) on each box's centre."""
    wh = boxes[:, 2:4] - boxes[:, 0:2]
    half = np.max(wh, axis=1, keepdims=True) / 2
    centre = boxes[:, 0:2] + wh / 2
    return np.concatenate([centre - half, centre + half], axis=1)


def crops(image, boxes, size):
    """The ``boxes`` of ``image`` resized to ``size`` x ``size`` (area), zeros outside the image."""
    h, w = image.shape[:2]
    out = np.empty((len(boxes), size, size, 3), np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(np.round(boxes).astype(np.int64)):
        x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
        patch = np.zeros((y2 - y1, x2 - x1, 3), np.uint8)
        cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if cx2 > cx1 and cy2 > cy1:
            patch[cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1] = image[cy1:cy2, cx1:cx2]
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return out


def nms_min(boxes, scores, threshold):
    """Greedy NMS with overlap = intersection / the smaller box's area; kept indices, best first."""
    order = np.argsort(-scores, kind="mergesort")
    areas = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        wh = np.maximum(np.minimum(boxes[best, 2:4], boxes[rest, 2:4])
                        - np.maximum(boxes[best, 0:2], boxes[rest, 0:2]), 0)
        overlap = wh[:, 0] * wh[:, 1] / np.maximum(np.minimum(areas[best], areas[rest]), 1e-9)
        order = rest[overlap <= threshold]
    return np.asarray(keep, np.int64)


class MtcnnDetector(Detector):
    """MTCNN: P-Net over an image pyramid from ``min_size`` up, then R-Net and O-Net on the crops.

    ``min_size`` (frame pixels) also sets the pyramid's first level: 12 / min_size times the
    image (min_size 8: 1.5x, the cost of P-Net grows with its square). Options:
    ``thresholds`` (face probability kept after P-, R- and O-Net; ``confidence`` below the
    third has no effect), ``factor`` (pyramid step), ``input_size`` (default None: the
    pyramid does the scaling), ``threads`` (onnxruntime intra-op threads, default 1),
    ``providers`` (onnxruntime execution providers).
    """
    name = "mtcnn"

    def __init__(self, models_dir, input_size=None, thresholds=THRESHOLDS, factor=FACTOR, threads=1,
                 providers=None, box_adjust=BOX_ADJUST, **common):
        Detector.__init__(self, input_size=input_size, box_adjust=box_adjust, **common)
        thresholds = tuple(float(t) for t in thresholds)
        if len(thresholds) != 3 or not all(0 <= t <= 1 for t in thresholds):
            raise ConfigError("mtcnn thresholds %r: need three probabilities (P-, R-, O-Net)" % (thresholds,))
        if not 0.1 <= float(factor) <= 0.95:
            raise ConfigError("mtcnn factor %r: need a pyramid step in [0.1, 0.95]" % (factor,))
        self.thresholds, self.factor = thresholds, float(factor)
        hint = EXPORT_HINT % models_dir
        paths = dict((s, model_file(models_dir, FILES[s], self.name, command=hint)) for s in STAGES)
        self.pnet, self.rnet, self.onet = [Stage(paths[s], s, threads, providers) for s in STAGES]

    def _detect(self, image, scale):
        min_face = max(self.min_size * scale, MIN_FACE)
        boxes, scores, _ = self.cascade(image, min_face)
        return boxes, scores

    def proposals(self, image, min_face):
        """P-Net over the pyramid: (boxes, scores, offsets) after NMS within and across levels."""
        h, w = image.shape[:2]
        t, window, stride = self.thresholds[0], self.pnet.window, self.pnet.stride
        found = []
        for s in pyramid(h, w, min_face, self.factor, window):
            size = (int(math.ceil(w * s)), int(math.ceil(h * s)))
            level = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            out = self.pnet.run(level[None])
            ys, xs = np.nonzero(out["prob"][0, 1] >= t)
            if not len(ys):
                continue
            sx, sy = float(size[0]) / w, float(size[1]) / h  # the level's true scales
            x1, y1 = xs * float(stride), ys * float(stride)
            boxes = np.stack([x1 / sx, y1 / sy, (x1 + window) / sx, (y1 + window) / sy], axis=1)
            scores = out["prob"][0, 1, ys, xs]
            offsets = out["reg"][0][:, ys, xs].T
            keep = nms(boxes, scores, NMS_LEVEL)
            found.append((boxes[keep], scores[keep], offsets[keep]))
        if not found:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 4), np.float32)
        boxes, scores, offsets = [np.concatenate(parts) for parts in zip(*found)]
        keep = nms(boxes, scores, NMS_LEVELS)
        return boxes[keep], scores[keep], offsets[keep]

    def cascade(self, image, min_face=12.0):
        """The whole cascade on a BGR ``image``: (boxes Nx4, scores N, landmarks Nx5x2) in its
        pixels, before ``box_adjust`` and the common filters (``detect`` applies them)."""
        boxes, scores, offsets = self.proposals(image, min_face)
        if not len(boxes):
            return empty() + (np.zeros((0, 5, 2), np.float32),)
        boxes = square(calibrate(boxes, offsets))
        out = self.rnet.run(crops(image, boxes, self.rnet.window))
        ok = out["prob"][:, 1] > self.thresholds[1]
        boxes, scores, offsets = boxes[ok], out["prob"][ok, 1], out["reg"][ok]
        keep = nms(boxes, scores, NMS_RNET)
        boxes = square(calibrate(boxes[keep], offsets[keep]))
        if not len(boxes):
            return empty() + (np.zeros((0, 5, 2), np.float32),)
        out = self.onet.run(crops(image, boxes, self.onet.window))
        ok = out["prob"][:, 1] > self.thresholds[2]
        boxes, scores, offsets, marks = boxes[ok], out["prob"][ok, 1], out["reg"][ok], out["landmarks"][ok]
        wh = boxes[:, 2:4] - boxes[:, 0:2]
        landmarks = np.stack([boxes[:, 0:1] + wh[:, 0:1] * marks[:, 0:5],
                              boxes[:, 1:2] + wh[:, 1:2] * marks[:, 5:10]], axis=2)
        boxes = calibrate(boxes, offsets)
        keep = nms_min(boxes, scores, NMS_ONET)
        return (boxes[keep].astype(np.float32), scores[keep].astype(np.float32),
                landmarks[keep].astype(np.float32))
