"""A light IoU tracker that carries each face between frames and votes over its labels.

Faces in a crowd barely move from one frame to the next, so greedy matching on box
overlap is enough (no motion model, no appearance features). Each track keeps its last
``vote`` probability vectors; its label is the argmax of their mean, so one bad crop
(motion blur, a hand in front of the mask) does not flip the label on screen. A new
track is classified at once, then every ``classify_every`` frames, so most frames only
detect and track.
"""
import collections

import numpy as np

from edge.infer.faces import decide


def _intersections(a, b):
    """(pairwise intersection areas N x M, areas of ``a``, areas of ``b``) of xyxy boxes."""
    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    return inter, area_a, area_b


def iou_matrix(a, b):
    """Pairwise IoU of xyxy boxes ``a`` (N x 4) and ``b`` (M x 4) -> N x M float32."""
    inter, area_a, area_b = _intersections(a, b)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)


def contained(a, b):
    """Pairwise share of each box of ``a`` (N x 4) lying inside each box of ``b`` (M x 4) -> N x M."""
    inter, area_a, _ = _intersections(a, b)
    return inter / np.maximum(area_a[:, None], 1e-9)


def greedy_match(ious, threshold):
    """Pairs (row, col) by descending IoU, each row and column used once, IoU >= threshold."""
    pairs = []
    if ious.size == 0:
        return pairs
    rows, cols = np.nonzero(ious >= threshold)
    order = np.argsort(-ious[rows, cols], kind="mergesort")  # stable; kind="stable" needs numpy 1.15
    used_rows, used_cols = set(), set()
    for k in order:
        r, c = int(rows[k]), int(cols[k])
        if r not in used_rows and c not in used_cols:
            used_rows.add(r)
            used_cols.add(c)
            pairs.append((r, c))
    return pairs


class Track(object):
    """One face followed over frames: its box, detector score and recent classifications."""

    def __init__(self, track_id, box, det_score, vote):
        self.id = track_id
        self.box = np.asarray(box, np.float32)
        self.det_score = float(det_score)
        self.hits = 1                # detections matched, this one included
        self.missed = 0              # detector runs since the last match
        self.last_classified = None  # frame number of the last classification
        self.classified = 0          # classifications so far (the vote holds the last ``vote``)
        self.history = collections.deque(maxlen=vote)
        self.label = None
        self.score = 0.0
        self.probs = None

    def needs_classification(self, frame, every):
        """True for a track never classified, or classified ``every`` frames ago or more."""
        return self.last_classified is None or frame - self.last_classified >= every

    def add_probs(self, probs, classes, frame, non_compliant_threshold=None):
        """Record a classification and update the voted label: the mean of the recent
        vectors, labelled at ``non_compliant_threshold`` (``edge.infer.faces.decide``)."""
        self.history.append(np.asarray(probs, np.float32))
        self.last_classified = frame
        self.classified += 1
        self.probs = np.mean(self.history, axis=0)
        self.label, self.score = decide(self.probs, classes, non_compliant_threshold)


class Tracker(object):
    """Greedy IoU tracker. ``update`` on frames the detector ran; ``tracks`` in between."""

    def __init__(self, iou=0.3, max_missed=10, min_hits=1, vote=5, next_id=None):
        """iou: match threshold; max_missed: detector runs a track survives unmatched;
        min_hits: matches before a track is reported; vote: classifications averaged;
        next_id: a callable giving each new track its id (default 1, 2, 3, ...; the
        service's ids continue across restarts, see ``edge.app.events.TrackIds``)."""
        self.iou, self.max_missed, self.min_hits, self.vote = iou, max_missed, min_hits, vote
        self.all = []
        self.next_id = next_id or _counter()

    def update(self, boxes, scores):
        """Match this frame's detections to tracks; returns the confirmed tracks seen now.

        Unmatched detections start new tracks; tracks unmatched for more than ``max_missed``
        detector runs are dropped. The returned tracks (those with ``min_hits`` matches)
        are in detection order.
        """
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        ious = iou_matrix([t.box for t in self.all], boxes)
        matched = {}
        for r, c in greedy_match(ious, self.iou):
            matched[c] = self.all[r]
        for track in self.all:
            track.missed += 1  # undone below for the matched ones
        seen = []
        for c in range(len(boxes)):
            track = matched.get(c)
            if track is None:
                track = Track(self.next_id(), boxes[c], scores[c], self.vote)
                self.all.append(track)
            else:
                track.box = boxes[c]
                track.det_score = float(scores[c])
                track.hits += 1
                track.missed = 0
            seen.append(track)
        self.all = [t for t in self.all if t.missed <= self.max_missed]
        return [t for t in seen if t.hits >= self.min_hits]

    def visible(self):
        """Tracks matched at the detector's last run and confirmed (``min_hits``)."""
        return [t for t in self.all if t.missed == 0 and t.hits >= self.min_hits]

    def reset(self):
        """Forget every track (a new scene or a reopened source)."""
        self.all = []


def _counter(start=1):
    """1, 2, 3, ... on each call."""
    state = [start - 1]

    def next_id():
        state[0] += 1
        return state[0]
    return next_id
