"""Box conventions of annotation sources, and the faces they left unannotated.

Each scene set frames a face its own way: kaggle853 from the brows to the chin, moxa3k the
whole head with hair, the original RetinaFace (WIDER FACE) from the hairline. The edge
already maps the detector's boxes to kaggle853's with ``BOX_ADJUST`` (per-side offsets in
units of the box's width/height). Training therefore keeps the ORIGINAL detector's
convention as the common one: every source's boxes are mapped into it with the inverse of
that source's adjustment, so the network does not spend its capacity learning one data
set's framing (what the first fine-tuning probe mostly learnt), sources with different
framings agree, and the exported model drops into the edge with its ``BOX_ADJUST``
unchanged. A source's adjustment is fitted like the edge's: median offsets from the
original detector's raw boxes to the annotations they match (IoU >= 0.3), on train scenes.

An adjustment ``a = (dx1, dy1, dx2, dy2)`` maps x1, x2 linearly: ``[x1', x2'] = M [x1, x2]``
with ``M = [[1 - dx1, dx1], [-dx2, 1 + dx2]]`` (the same for y); rows of M sum to 1, so
inverses and compositions are adjustments again.
"""
import json
import os

import numpy as np

from edge.infer.track import iou_matrix
from edge.measure.metrics import greedy_match

IDENTITY = (0.0, 0.0, 0.0, 0.0)
FIT_IOU = 0.3


def _matrices(adjust):
    a = [float(v) for v in adjust]
    return [np.array([[1 - a[i], a[i]], [-a[i + 2], 1 + a[i + 2]]]) for i in (0, 1)]


def _from_matrices(mx, my):
    return (float(mx[0, 1]), float(my[0, 1]), float(-mx[1, 0]), float(-my[1, 0]))


def apply(boxes, adjust):
    """Boxes (N, 4) xyxy adjusted as ``edge.infer.detectors.base.Detector.postprocess`` does."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if adjust is None:
        return boxes.copy()
    wh = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)
    return boxes + np.tile(wh, 2) * np.asarray(adjust, np.float32)


def invert(adjust):
    """The adjustment that undoes ``adjust``."""
    mx, my = _matrices(adjust)
    return _from_matrices(np.linalg.inv(mx), np.linalg.inv(my))


def compose(first, then):
    """One adjustment equal to ``first`` followed by ``then``."""
    fx, fy = _matrices(first)
    tx, ty = _matrices(then)
    return _from_matrices(tx @ fx, ty @ fy)


def fit(pairs):
    """Median adjustment from detections to annotations: ``pairs`` is a list of
    (raw detector boxes, annotated boxes) per scene; returns (adjust, matched faces)."""
    offsets = []
    for det, gt in pairs:
        det = np.asarray(det, np.float32).reshape(-1, 4)
        gt = np.asarray(gt, np.float32).reshape(-1, 4)
        if not len(det) or not len(gt):
            continue
        scores = np.arange(len(det), 0, -1, dtype=np.float32)  # detections come best first
        _, det_to_gt = greedy_match(gt, det, scores, FIT_IOU)
        for d, g in enumerate(det_to_gt):
            if g >= 0:
                wh = np.tile(det[d, 2:] - det[d, :2], 2)
                offsets.append((gt[g] - det[d]) / np.maximum(wh, 1e-6))
    if not offsets:
        return IDENTITY, 0
    return tuple(round(float(v), 4) for v in np.median(np.array(offsets), axis=0)), len(offsets)


def unannotated(det_boxes, det_scores, gt_boxes, min_score, max_iou=0.1):
    """Confident detections that touch no annotated face (IoU <= ``max_iou`` and centre
    outside every annotation): faces the annotators left out, to be ignored in training.
    Boxes are in the detector's convention, annotations in the source's."""
    det = np.asarray(det_boxes, np.float32).reshape(-1, 4)
    keep = np.asarray(det_scores, np.float32).reshape(-1) >= min_score
    det = det[keep]
    gt = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
    if not len(det) or not len(gt):
        return det
    centre = (det[:, None, :2] + det[:, None, 2:]) / 2
    inside = ((centre >= gt[None, :, :2]) & (centre <= gt[None, :, 2:])).all(axis=2).any(axis=1)
    touches = iou_matrix(det, gt).max(axis=1) > max_iou
    return det[~inside & ~touches]


def detector_pass(scenes, detector, cache_path=None, progress=None):
    """Raw detections of ``detector`` (box_adjust None) on each scene: {key: (boxes, scores)}.

    Cached as JSON at ``cache_path`` (keyed by scene key) so that runs sharing data do not
    repeat the pass; a cache missing any scene is recomputed.
    """
    if cache_path and os.path.isfile(cache_path):
        with open(cache_path) as stream:
            cached = json.load(stream)
        if all(s.key in cached for s in scenes):
            return {k: (np.asarray(v["boxes"], np.float32).reshape(-1, 4), np.asarray(v["scores"], np.float32))
                    for k, v in cached.items()}
    import cv2
    out = {}
    for scene in scenes:
        boxes, scores = detector.detect(cv2.imread(scene.path, cv2.IMREAD_COLOR))
        out[scene.key] = (boxes, scores)
        if progress is not None:
            progress.update(1)
    if cache_path:
        os.makedirs(os.path.dirname(os.path.abspath(cache_path)), exist_ok=True)
        with open(cache_path, "w") as stream:
            json.dump({k: {"boxes": np.round(b, 2).tolist(), "scores": np.round(s, 4).tolist()}
                       for k, (b, s) in out.items()}, stream)
    return out
