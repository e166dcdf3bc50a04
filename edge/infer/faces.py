"""What inference says about one face, and what a set of faces adds up to.

``Face`` is the unit every part passes on: the detector's box and score, the classifier's
probabilities, the (voted) label and, under tracking, the track id. Compliance is defined
here once: a face wearing its mask correctly (``mask``) is compliant; ``no_mask`` and
``incorrect`` are not.
"""
import numpy as np

from edge.infer.model_meta import CLASS_NAMES

COMPLIANT = ("mask",)
NON_COMPLIANT = ("no_mask", "incorrect")


def is_compliant(label):
    """True for a mask worn correctly, False for no mask or a mask worn wrong, None when unclassified."""
    return None if label is None else label in COMPLIANT


def called_non_compliant(probs, classes, threshold=None):
    """Whether each row of ``probs`` (N x C in ``classes`` order, or one vector) is called
    non-compliant.

    Without ``threshold``: when its most probable class is not ``mask``. With one (the
    operating point of a site that would rather flag than miss, or the reverse): when the
    non-compliant classes together, 1 - P(mask), reach it. For a model without a ``mask``
    class the top class decides (the threshold does not apply).
    """
    probs = np.asarray(probs, np.float64)
    classes = list(classes)
    if "mask" not in classes:
        return np.isin(np.asarray(classes)[probs.argmax(-1)], NON_COMPLIANT)
    mask = classes.index("mask")
    if threshold is None:
        return probs.argmax(-1) != mask
    return 1.0 - probs[..., mask] >= threshold


def decide(probs, classes, threshold=None):
    """(label, score) of one probability vector: its top class, or with ``threshold`` the
    top non-compliant class once ``called_non_compliant`` says so (else ``mask``). The
    score is the label's own probability."""
    probs = np.asarray(probs, np.float64)
    best = int(np.argmax(probs))
    if threshold is not None and "mask" in classes:
        mask = list(classes).index("mask")
        if called_non_compliant(probs, classes, threshold):
            best = max((i for i in range(len(classes)) if i != mask), key=lambda i: probs[i])
        else:
            best = mask
    return classes[best], float(probs[best])


class Face(object):
    """One face in one frame: box (xyxy pixels), detector score, class probabilities,
    voted label and its score, and the track id (None without tracking)."""

    __slots__ = ("box", "det_score", "probs", "label", "score", "track")

    def __init__(self, box, det_score, probs=None, label=None, score=0.0, track=None):
        self.box, self.det_score, self.probs = box, det_score, probs
        self.label, self.score, self.track = label, score, track

    def to_dict(self):
        """The face's record in an events line (box as ints, score to 3 decimals)."""
        return {
            "track": self.track,
            "box": [int(round(float(v))) for v in self.box],
            "label": self.label,
            "compliant": is_compliant(self.label),
            "score": round(float(self.score), 3),
            "det_score": round(float(self.det_score), 3),
        }


def count_labels(faces):
    """{label: count} over every class name (zeros included), for classified faces."""
    counts = dict((name, 0) for name in CLASS_NAMES)
    for face in faces:
        if face.label in counts:
            counts[face.label] += 1
    return counts


def compliance(counts):
    """Fraction of classified faces (or people) wearing a mask correctly, or None without any."""
    total = sum(counts.values())
    return sum(counts.get(c, 0) for c in COMPLIANT) / float(total) if total else None
