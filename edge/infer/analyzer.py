"""One frame in, every face out: detection, then all faces classified in batches.

``FaceAnalyzer`` has no state between frames; ``edge.evaluate``, ``edge-bench``, still-photo
mode and the video loop (``edge.app.pipeline``) all run it. ``StageTimer`` records each
stage's latency for the bench and the end-of-run log.
"""
import bisect
import collections
import contextlib
import time

import numpy as np

from edge.infer.classify.base import DEFAULT_MAX_BATCH
from edge.infer.faces import Face, decide
from edge.infer.preprocess import crops_to_batch

STAGES = ("capture", "detect", "preprocess", "classify", "track", "draw", "write", "ops")
# Upper bounds (seconds) of the latency histogram that /metrics exports, +Inf implied.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class StageTimer(object):
    """Latencies per stage in seconds: the last ``keep`` of each (so memory stays bounded)
    for percentiles, and counts per bucket of ``BUCKETS`` since the start for histograms."""

    def __init__(self, keep=5000):
        self.samples = collections.OrderedDict((s, collections.deque(maxlen=keep)) for s in STAGES)
        self.totals = dict((s, 0.0) for s in STAGES)
        self.counts = dict((s, 0) for s in STAGES)
        self.buckets = dict((s, [0] * (len(BUCKETS) + 1)) for s in STAGES)

    def add(self, stage, seconds):
        """Record one measurement of ``stage``."""
        if stage not in self.samples:
            self.buckets[stage] = [0] * (len(BUCKETS) + 1)
            self.totals[stage], self.counts[stage] = 0.0, 0
            self.samples[stage] = collections.deque(maxlen=self.samples["capture"].maxlen)
        self.samples[stage].append(seconds)
        self.totals[stage] += seconds
        self.counts[stage] += 1
        self.buckets[stage][bisect.bisect_left(BUCKETS, seconds)] += 1

    def histograms(self):
        """{stage: (cumulative counts per bucket of ``BUCKETS`` and +Inf, sum, count)} of the
        stages that ran; safe to call from another thread while the loop adds."""
        out = collections.OrderedDict()
        for stage in list(self.samples):
            counts = list(self.buckets[stage])
            if not self.counts[stage]:
                continue
            cumulative, total = [], 0
            for n in counts:
                total += n
                cumulative.append(total)
            out[stage] = (cumulative, self.totals[stage], total)
        return out

    @contextlib.contextmanager
    def stage(self, name):
        """``with timer.stage("detect"): ...`` records the block's wall time."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def summary(self):
        """{stage: {count, mean_ms, p50_ms, p95_ms, p99_ms}} for stages that ran."""
        out = collections.OrderedDict()
        for stage, values in self.samples.items():
            if not values:
                continue
            ms = np.asarray(values, np.float64) * 1000.0
            p50, p95, p99 = np.percentile(ms, [50, 95, 99])
            out[stage] = {"count": self.counts[stage],
                          "mean_ms": round(1000.0 * self.totals[stage] / self.counts[stage], 3),
                          "p50_ms": round(p50, 3), "p95_ms": round(p95, 3), "p99_ms": round(p99, 3)}
        return out

    def reset(self):
        """Forget every measurement (after a warm-up)."""
        for stage in list(self.samples):
            self.samples[stage].clear()
            self.totals[stage], self.counts[stage] = 0.0, 0
            self.buckets[stage] = [0] * (len(BUCKETS) + 1)


class FaceAnalyzer(object):
    """Detection + classification of one frame, the unit evaluate and bench reuse.

    detector: ``edge.infer.detect`` Detector; classifier: ``edge.infer.classify.base.Classifier``;
    max_batch: largest batch per ``predict`` call (1 = one face at a time; None: the classifier's).
    non_compliant_threshold: the labels' operating point (``edge.infer.faces.decide``;
    None: the top class).
    """

    def __init__(self, detector, classifier, max_batch=None, timer=None, non_compliant_threshold=None):
        self.detector, self.classifier = detector, classifier
        self.non_compliant_threshold = non_compliant_threshold
        sizes = [b for b in (max_batch, getattr(classifier, "max_batch", None)) if b]
        self.max_batch = min(sizes) if sizes else DEFAULT_MAX_BATCH
        self.classes = list(classifier.classes)
        self.timer = timer if timer is not None else StageTimer()
        self.classified = 0      # faces classified
        self.predict_calls = 0   # classifier calls (batches)

    def close(self):
        """Release both models (a TensorRT engine holds GPU memory until then); safe twice."""
        self.classifier.close()
        self.detector.close()

    def detect(self, image):
        """(boxes float32 Nx4 xyxy, scores float32 N) of the faces in a BGR frame."""
        with self.timer.stage("detect"):
            boxes, scores = self.detector.detect(image)
        return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32)

    def classify(self, image, boxes, max_batch=None):
        """Class probabilities per box: a list of (C,) arrays, None where the crop was empty.

        Crops are made and classified in batches of ``max_batch`` (default: the
        analyzer's); 1 reproduces the one-face-at-a-time way of typical mask detectors.
        """
        batch_size = max_batch or self.max_batch
        results = [None] * len(boxes)
        for start in range(0, len(boxes), batch_size):
            chunk = boxes[start:start + batch_size]
            with self.timer.stage("preprocess"):
                batch, kept = crops_to_batch(image, chunk, self.classifier.meta)
            if not kept:
                continue
            with self.timer.stage("classify"):
                probs = self.classifier.predict(batch)
            self.predict_calls += 1
            self.classified += len(kept)
            for row, index in enumerate(kept):
                results[start + index] = np.asarray(probs[row], np.float32)
        return results

    def label(self, probs):
        """(label, score) of one probability vector, at ``non_compliant_threshold``."""
        return decide(probs, self.classes, self.non_compliant_threshold)

    def analyze(self, image, max_batch=None):
        """Every face of one frame, detected and classified: a list of ``Face`` (no track)."""
        boxes, scores = self.detect(image)
        faces = []
        for box, score, probs in zip(boxes, scores, self.classify(image, boxes, max_batch)):
            face = Face(box, float(score), probs)
            if probs is not None:
                face.label, face.score = self.label(probs)
            faces.append(face)
        return faces
