"""Detection + classification accuracy against annotated faces (used by ``edge.measure.evaluate``).

Faces are matched to detections at IoU 0.5 by default (``iou``: 0.3 compares a data set
whose boxes follow a looser convention); the result says which (``iou``).

- Face detection recall at the matching IoU (``main``) and at 0.3 (``loose``), whatever
  the label (a face the detector misses is never classified), per ground-truth class and by
  face size (longest side < 32, 32-64, >= 64 px); false positives per image (detections
  that match no face).
- Average precision at the matching IoU per class, PASCAL VOC style (all-point interpolation):
  a detection counts for class c when its label is c, with score detector confidence x
  P(c); detections are matched greedily by score, a second detection of the same face is
  a false positive. mAP is the mean of the mask and no_mask APs (the published measure).
- Compliance AP: the same for "non-compliant" (no_mask or incorrect, the seed's
  definition): a detection counts when its label is not mask, with score detector
  confidence x (1 - P(mask)); a two-class model is scored on incorrect faces this way too.
- The confusion between classes on matched faces (plus "missed").
- ``face_ap``: AP of the detector alone (any label, detector score): the
  ceiling a perfect classifier would bring the class APs to, which tells detector
  misses from classifier mistakes.
- Ignore regions (optional, ``unscored``): a detection on a face the annotators left out
  is taken out before scoring and counted in ``ignored_detections``.
"""
import collections

import numpy as np

from edge.infer.faces import NON_COMPLIANT
from edge.infer.track import iou_matrix  # one IoU for the service and its evaluation

SIZE_BINS = (("<32", 0.0, 32.0), ("32-64", 32.0, 64.0), (">=64", 64.0, float("inf")))
GT_CLASSES = ("mask", "no_mask", "incorrect")
MAP_CLASSES = ("mask", "no_mask")
COMPLIANCE = "non_compliant"
IOU_MAIN, IOU_LOOSE = 0.5, 0.3  # the default matching threshold, and the loose one


def size_bin(box):
    """The size bin name of a box by its longest side in pixels."""
    side = max(float(box[2]) - float(box[0]), float(box[3]) - float(box[1]))
    for name, low, high in SIZE_BINS:
        if low <= side < high:
            return name
    return SIZE_BINS[0][0]


def greedy_match(gt_boxes, det_boxes, det_scores, threshold):
    """Match detections to faces, best score first, each to its unmatched face of highest IoU.

    Returns (gt_to_det, det_to_gt): int arrays, -1 where unmatched.
    """
    n_gt, n_det = len(gt_boxes), len(det_boxes)
    gt_to_det = np.full(n_gt, -1, np.int64)
    det_to_gt = np.full(n_det, -1, np.int64)
    if not n_gt or not n_det:
        return gt_to_det, det_to_gt
    ious = iou_matrix(det_boxes, gt_boxes)
    # mergesort: stable (ties keep input order) in numpy 1.13 too; kind="stable" needs 1.15.
    for d in np.argsort(-np.asarray(det_scores, np.float64), kind="mergesort"):
        row = np.where(gt_to_det < 0, ious[d], -1.0)
        g = int(np.argmax(row))
        if row[g] >= threshold:
            gt_to_det[g], det_to_gt[d] = d, g
    return gt_to_det, det_to_gt


def unscored(gt_boxes, det_boxes, det_scores, ignore_boxes, threshold):
    """Which detections an ignore region takes out of scoring: a boolean array, True for a
    detection that matches no face at ``threshold`` but overlaps an ignore region (a face
    the annotators left out) by IoU >= ``threshold``. Such a detection is neither a hit nor
    a false positive, as WIDER FACE and COCO treat their ignore regions."""
    det_boxes = np.asarray(det_boxes, np.float32).reshape(-1, 4)
    ignore_boxes = np.asarray(ignore_boxes, np.float32).reshape(-1, 4)
    if not len(det_boxes) or not len(ignore_boxes):
        return np.zeros(len(det_boxes), bool)
    _, det_to_gt = greedy_match(np.asarray(gt_boxes, np.float32).reshape(-1, 4), det_boxes, det_scores, threshold)
    return (det_to_gt < 0) & (iou_matrix(det_boxes, ignore_boxes).max(axis=1) >= threshold)


def average_precision(scores, true_positive, n_positive):
    """VOC all-point interpolated AP of ranked detections; None when there is no positive."""
    if n_positive <= 0:
        return None
    order = np.argsort(-np.asarray(scores, np.float64), kind="mergesort")  # stable, as above
    tp = np.asarray(true_positive, np.float64)[order]
    if not len(tp):
        return 0.0
    ctp, cfp = np.cumsum(tp), np.cumsum(1.0 - tp)
    recall = ctp / float(n_positive)
    precision = ctp / np.maximum(ctp + cfp, 1e-12)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope
    steps = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _ratio(hit, n):
    return round(hit / float(n), 4) if n else None


class Evaluation(object):
    """Accumulates images (truth + the service's faces) and reports the metrics above.

    ``ap_classes``: the classes that get an AP (the model's); the compliance AP is added
    when mask is one of them.
    """

    def __init__(self, ap_classes=("mask", "no_mask"), iou=IOU_MAIN):
        self.ap_classes = tuple(ap_classes)
        # The matching threshold of recall, AP, false positives and confusion; a data set
        # with another box convention (looser boxes) can be compared at 0.3.
        self.iou = float(iou)
        # Each ranked category: the labels it stands for (detections and truth alike).
        self.categories = collections.OrderedDict((c, (c,)) for c in self.ap_classes)
        if "mask" in self.ap_classes:
            self.categories[COMPLIANCE] = NON_COMPLIANT
        self.n_images = 0
        self.n_detections = 0
        self.ignored_detections = 0  # taken out of scoring by ignore regions (``unscored``)
        self.false_positives = 0
        # counts[(gt class, size bin, iou)] = [hits, faces]
        self.counts = collections.defaultdict(lambda: [0, 0])
        self.ranked = dict((c, []) for c in self.categories)  # (score, is true positive)
        self.faces_ranked = []  # (detector score, is true positive) whatever the label
        self.positives = collections.Counter()
        self.confusion = collections.defaultdict(collections.Counter)

    def add(self, gt_boxes, gt_labels, det_boxes, det_scores, det_labels, det_probs, classes):
        """Score one image.

        det_labels: each detection's label (None: not classified); det_probs: its class
        probabilities ((C,) array in ``classes`` order, or None). Returns a list of
        (gt index, det index or -1, predicted label or None) for each face missed or
        mislabelled at IoU 0.5 (the evaluate command's picture of misses).
        """
        gt_boxes = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
        det_boxes = np.asarray(det_boxes, np.float32).reshape(-1, 4)
        det_scores = np.asarray(det_scores, np.float32).reshape(-1)
        self.n_images += 1
        self.n_detections += len(det_boxes)
        bins = [size_bin(b) for b in gt_boxes]
        main = None
        for iou in sorted({self.iou, IOU_LOOSE}, reverse=True):  # once when they are equal
            gt_to_det, det_to_gt = greedy_match(gt_boxes, det_boxes, det_scores, iou)
            for g, label in enumerate(gt_labels):
                for key in ((label, bins[g], iou), ("all", bins[g], iou)):
                    cell = self.counts[key]
                    cell[0] += int(gt_to_det[g] >= 0)
                    cell[1] += 1
            if iou == self.iou:
                main = gt_to_det
                self.false_positives += int((det_to_gt < 0).sum())
                self.faces_ranked.extend(zip(det_scores.tolist(), (det_to_gt >= 0).tolist()))
        wrong = []
        for g, label in enumerate(gt_labels):
            d = int(main[g])
            predicted = det_labels[d] if d >= 0 else None
            self.confusion[label]["missed" if d < 0 else predicted or "unclassified"] += 1
            if d < 0 or (predicted != label and label in classes):
                wrong.append((g, d, predicted))
        for name, labels in self.categories.items():
            self._rank(name, labels, gt_boxes, gt_labels, det_boxes, det_scores, det_labels, det_probs, classes)
        return wrong

    def _rank(self, name, labels, gt_boxes, gt_labels, det_boxes, det_scores, det_labels, det_probs, classes):
        """Add this image's detections labelled one of ``labels`` to the ranking of ``name``."""
        mine = [i for i, lab in enumerate(det_labels) if lab in labels and det_probs[i] is not None]
        positives = [i for i, lab in enumerate(gt_labels) if lab in labels]
        self.positives[name] += len(positives)
        if not mine:
            return
        columns = [k for k, c in enumerate(classes) if c in labels]
        scores = np.array([det_scores[i] * float(np.sum(det_probs[i][columns])) for i in mine], np.float64)
        # Matching within one image in score order is what VOC's global ranking does to it.
        _, det_to_gt = greedy_match(gt_boxes[positives], det_boxes[mine], scores, self.iou)
        self.ranked[name].extend(zip(scores.tolist(), (det_to_gt >= 0).tolist()))

    def recall(self):
        """{gt class or 'all': {n, main, loose, by_size: {bin: {n, main, loose}}, ge32}}: recall at the
        matching threshold (``main``) and at 0.3 (``loose``)."""
        out = collections.OrderedDict()
        for label in ("all",) + GT_CLASSES:
            entry = collections.OrderedDict()
            by_size = collections.OrderedDict()
            totals = {self.iou: [0, 0], IOU_LOOSE: [0, 0]}
            large = [0, 0]
            for name, _, _ in SIZE_BINS:
                cell50 = self.counts.get((label, name, self.iou), [0, 0])
                cell30 = self.counts.get((label, name, IOU_LOOSE), [0, 0])
                by_size[name] = {"n": cell50[1], "main": _ratio(*cell50), "loose": _ratio(*cell30)}
                for iou, cell in dict(((IOU_LOOSE, cell30), (self.iou, cell50))).items():
                    totals[iou][0] += cell[0]
                    totals[iou][1] += cell[1]
                if name != SIZE_BINS[0][0]:
                    large[0] += cell50[0]
                    large[1] += cell50[1]
            if not totals[self.iou][1] and label != "all":
                continue
            entry["n"] = totals[self.iou][1]
            entry["main"] = _ratio(*totals[self.iou])
            entry["loose"] = _ratio(*totals[IOU_LOOSE])
            entry["ge32"] = {"n": large[1], "main": _ratio(*large)}
            entry["by_size"] = by_size
            out[label] = entry
        return out

    def result(self):
        """Everything as one JSON-ready dict (see the module docstring)."""
        ap = collections.OrderedDict()
        for name in self.categories:
            ranked = self.ranked[name]
            value = average_precision([s for s, _ in ranked], [t for _, t in ranked], self.positives[name])
            ap[name] = None if value is None else round(value, 4)
        compliance_ap = ap.pop(COMPLIANCE, None)
        known = [ap[c] for c in MAP_CLASSES if ap.get(c) is not None]
        n_faces = sum(self.counts.get(("all", b, self.iou), [0, 0])[1] for b, _, _ in SIZE_BINS)
        face_ap = average_precision([s for s, _ in self.faces_ranked],
                                    [t for _, t in self.faces_ranked], n_faces)
        confusion = collections.OrderedDict(
            (label, dict(self.confusion[label])) for label in GT_CLASSES if label in self.confusion)
        return collections.OrderedDict([
            ("iou", {"main": self.iou, "loose": IOU_LOOSE}),
            ("n_images", self.n_images),
            ("n_faces", n_faces),
            ("n_detections", self.n_detections),
            ("ignored_detections", self.ignored_detections),
            ("recall", self.recall()),
            ("fp_per_image", round(self.false_positives / float(self.n_images), 4) if self.n_images else None),
            ("ap", ap),
            ("map", round(sum(known) / len(known), 4) if known else None),
            ("compliance_ap", compliance_ap),
            ("face_ap", None if face_ap is None else round(face_ap, 4)),
            ("confusion", confusion),
        ])
