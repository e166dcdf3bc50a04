"""``edge-bench`` classifier sweep: batch sizes x models (input sizes) on real face crops.

The crops come from the bench's input through the configured detector, so they are the
faces the service would classify. Each model is loaded with the service's backend; the
crops are preprocessed once (timed per face: it depends on the input size) and then
classified in batches of each size, ``repeat`` passes, after one warm-up call per size.
"""
import collections
import time

import numpy as np

from edge.common import resolve_path
from edge.errors import SourceError
from edge.infer.classify.loader import load_classifier
from edge.infer.preprocess import crops_to_batch
from edge.io.sources import open_source
from edge.measure import flops


def collect_faces(config, detector, wanted, max_frames=200):
    """[(frame, boxes)] from the start of the input until ``wanted`` faces are found."""
    source = open_source(config["input"], **config["source"])
    found, total, read = [], 0, 0
    try:
        while total < wanted and read < max_frames and source.is_streaming:
            frame = source.read(timeout=1.0)
            if frame is None:
                continue
            read += 1
            boxes, _ = detector.detect(frame.image)
            if len(boxes):
                found.append((frame.image, boxes))
                total += len(boxes)
    finally:
        source.close()
    if not total:
        raise SourceError("the classifier sweep found no face in the first %d frames of %s"
                          % (read, config["input"]))
    return found


def _percentiles(values_ms):
    p50, p95 = np.percentile(values_ms, [50, 95])
    return round(float(p50), 3), round(float(p95), 3)


def sweep_model(classifier, faces, batches, wanted, repeat):
    """Timings of one loaded classifier over the crops of ``faces`` at each batch size."""
    start = time.perf_counter()
    parts = [crops_to_batch(image, boxes, classifier.meta)[0] for image, boxes in faces]
    crops = np.concatenate([p for p in parts if len(p)], axis=0)
    pre_ms = 1000.0 * (time.perf_counter() - start) / max(len(crops), 1)
    # Repeat the crops when the input had fewer faces than asked, so every batch is full.
    crops = np.concatenate([crops] * (-(-wanted // len(crops))), axis=0)[:wanted]
    points = []
    for batch in batches:
        classifier.predict(crops[:batch])  # warm-up: allocations, TensorRT contexts, caches
        calls = []
        for _ in range(repeat):
            for first in range(0, len(crops), batch):
                t0 = time.perf_counter()
                classifier.predict(crops[first:first + batch])
                calls.append(time.perf_counter() - t0)
        total = sum(calls)
        p50, p95 = _percentiles(np.asarray(calls) * 1000.0)
        n = len(crops) * repeat
        points.append(collections.OrderedDict([
            ("batch", batch), ("faces_per_s", round(n / total, 1)),
            ("ms_per_face", round(1000.0 * total / n, 3)),
            ("ms_per_face_with_preprocess", round(1000.0 * total / n + pre_ms, 3)),
            ("call_p50_ms", p50), ("call_p95_ms", p95), ("calls", len(calls)),
        ]))
    return round(pre_ms, 3), points


def sweep(config, analyzer, models, batches, wanted=64, repeat=5):
    """One entry per model: input size, FLOPs, Nano estimate, preprocess and batch timings."""
    faces = collect_faces(config, analyzer.detector, wanted)
    clf = config["classifier"]
    results = []
    for model in models:
        path = resolve_path(model)
        classifier = load_classifier(path, backend=clf["backend"], max_batch=max(batches),
                                     engine_cache=clf["engine_cache"])
        try:
            h, w = [int(v) for v in classifier.meta["input_size"]]
            pre_ms, points = sweep_model(classifier, faces, batches, wanted, repeat)
            backend = getattr(classifier, "backend", None)
        finally:
            classifier.close()
        try:
            count = flops.onnx_flops(path, (1, 3, h, w))["flops"]
        except ImportError:
            count = None
        results.append(collections.OrderedDict([
            ("model", model), ("input_size", [h, w]), ("backend", backend),
            ("faces", wanted), ("repeat", repeat), ("preprocess_ms_per_face", pre_ms),
            ("flops_per_face", count),
            ("nano_estimate_ms_per_face", collections.OrderedDict(
                ("%d%%" % round(100 * e), None if not count else round(flops.nano_ms(count, e), 3))
                for e in flops.EFFICIENCIES)),
            ("points", points),
        ]))
    return results
