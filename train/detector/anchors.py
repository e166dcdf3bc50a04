"""Anchors, matching and box encoding of RetinaFace, as biubug6/Pytorch_Retinaface does them.

The anchor layout and the variances are the edge runtime's own (``edge/infer/detectors/retinaface.py``:
sizes 16/32, 64/128, 256/512 px on strides 8/16/32, variances 0.1/0.2, no clipping), imported,
not retyped, so that what is trained is what the edge decodes. Anchors here are in input
pixels (cx, cy, size); the original normalises by the image size, which gives the same
targets because the encoding is relative to the anchor.
"""
import numpy as np
import torch

from edge.infer.detectors.retinaface import ANCHOR_SIZES, STRIDES, VARIANCE_CENTER, VARIANCE_SIZE, anchors_for

POSITIVE_IOU = 0.35  # the original's overlap threshold
FORCED_MIN_IOU = 0.2  # a face is forced onto its best anchor only if they overlap this much
IGNORE_IOU = 0.2  # anchors overlapping an ignore region this much are neither positive nor negative


def anchor_boxes(height, width):
    """Anchors of an input size as a float32 tensor (A, 3): cx, cy, size in input pixels."""
    return torch.from_numpy(anchors_for(int(height), int(width)))


def anchor_spec():
    """The anchor definition as plain data, for checkpoints and ONNX metadata."""
    return {"strides": list(STRIDES), "min_sizes": [list(s) for s in ANCHOR_SIZES],
            "variances": [VARIANCE_CENTER, VARIANCE_SIZE], "clip": False,
            "order": "level, row, column, size", "units": "input pixels (cx, cy, side)"}


def anchor_xyxy(anchors):
    """(A, 3) anchors -> (A, 4) xyxy boxes."""
    half = anchors[:, 2:3] / 2
    return torch.cat([anchors[:, :2] - half, anchors[:, :2] + half], dim=1)


def box_iou(a, b):
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4), xyxy -> (N, M)."""
    tl = torch.max(a[:, None, :2], b[None, :, :2])
    br = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (br - tl).clamp(min=0).prod(dim=2)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(dim=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-9)


def encode(boxes, anchors):
    """xyxy boxes (A, 4) at their anchors (A, 3) -> regression targets (dx, dy, dw, dh)."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    size = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-6)
    delta_c = (centre - anchors[:, :2]) / (VARIANCE_CENTER * anchors[:, 2:3])
    delta_s = torch.log(size / anchors[:, 2:3]) / VARIANCE_SIZE
    return torch.cat([delta_c, delta_s], dim=1)


def decode(loc, anchors):
    """Regressions (A, 4) at anchors (A, 3) -> xyxy boxes; the torch twin of the edge's ``decode``."""
    centre = anchors[:, :2] + loc[:, :2] * VARIANCE_CENTER * anchors[:, 2:3]
    size = anchors[:, 2:3] * torch.exp(loc[:, 2:4] * VARIANCE_SIZE)
    return torch.cat([centre - size / 2, centre + size / 2], dim=1)


def match(gt_boxes, anchors, ignore_boxes=None, anchors_xyxy=None):
    """Assign faces to anchors: (labels (A,) int64: 1 face, 0 background, -1 ignored;
    targets (A, 4) float32 regression targets, zero where not positive).

    As the original: an anchor is positive when its best IoU with a face is >= 0.35, and
    each face whose best anchor overlaps it by >= 0.2 is forced onto that anchor (so small
    faces get one positive even below 0.35). Added: anchors that are not positive but
    overlap an ignore region (an unannotated face, a face cut by the crop, a face too small
    to learn) by >= 0.2 are ignored rather than taught as background.
    """
    n = anchors.shape[0]
    labels = torch.zeros(n, dtype=torch.int64)
    targets = torch.zeros(n, 4)
    boxes_a = anchor_xyxy(anchors) if anchors_xyxy is None else anchors_xyxy
    if gt_boxes is not None and len(gt_boxes):
        overlaps = box_iou(gt_boxes, boxes_a)  # (G, A)
        best_anchor_iou, best_anchor = overlaps.max(dim=1)
        best_gt_iou, best_gt = overlaps.max(dim=0)
        forced = torch.nonzero(best_anchor_iou >= FORCED_MIN_IOU).flatten()
        best_gt_iou[best_anchor[forced]] = 2.0  # survives any threshold
        for g in forced.tolist():  # in order, so a later face wins a shared anchor, as the original
            best_gt[best_anchor[g]] = g
        positive = best_gt_iou >= POSITIVE_IOU
        labels[positive] = 1
        targets[positive] = encode(gt_boxes[best_gt[positive]], anchors[positive])
    if ignore_boxes is not None and len(ignore_boxes):
        near = box_iou(ignore_boxes, boxes_a).max(dim=0).values >= IGNORE_IOU
        labels[near & (labels == 0)] = -1
    return labels, targets


def as_tensor(boxes):
    """A (N, 4) float32 tensor from a list/array of xyxy boxes (possibly empty)."""
    return torch.as_tensor(np.asarray(boxes, np.float32).reshape(-1, 4))
