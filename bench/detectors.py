"""Face detectors compared: time per 1280x720 frame and face recall on kaggle853 test scenes.

    .venv/bin/python bench/detectors.py [--data ../shared/data] [--configs NAME ...]

Speed: ``detect()`` on frames of ``videos/kaggle853_test_scenes.mp4`` (1280x720), after a
warm-up, p50/p95 milliseconds per frame. Recall at IoU 0.5 (greedy matching, best score
first), overall and for faces whose longest side is >= 32 px, on (a) the kaggle853 ``test``
split images at their own resolution (about 400x300, faces median 25 px) and (b) one frame
per scene of the video (the same scenes letterboxed to 1280x720, faces about 2.7x larger),
with false positives per image. Per-class recall (mask / no_mask) shows what each
detector misses.
"""
import argparse
import os
import sys
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from edge.infer.detect import create_detector  # noqa: E402
from edge.infer.track import iou_matrix  # noqa: E402
from edge.measure.metrics import greedy_match  # noqa: E402
from edge.measure.truth import read_video_truth, read_voc  # noqa: E402

# name -> (detector, options)
CONFIGS = {
    "haar": ("haar", {}),
    "haar@640": ("haar", {"input_size": 640}),
    "ssd@300": ("ssd", {}),
    "ssd@640": ("ssd", {"input_size": 640, "square": False}),
    "retina@native": ("retinaface", {"input_size": None}),
    "retina@1280": ("retinaface", {"input_size": 1280}),
    "retina@960": ("retinaface", {"input_size": 960}),
    "retina@800": ("retinaface", {"input_size": 800}),
    "retina@640": ("retinaface", {"input_size": 640}),
    "retina@480": ("retinaface", {"input_size": 480}),
    "retina@640x2t": ("retinaface", {"input_size": 640, "threads": 2}),
    "retina@640raw": ("retinaface", {"input_size": 640, "box_adjust": None}),
    # MTCNN's pyramid starts at 12 / min_size of the frame (min_size 10 here: 1.2x); its
    # cost follows min_size (in frame pixels), not input_size.
    "mtcnn": ("mtcnn", {}),
    "mtcnn@min8": ("mtcnn", {"min_size": 8}),
    "mtcnn@min20": ("mtcnn", {"min_size": 20}),
    "mtcnn@2t": ("mtcnn", {"threads": 2}),
    "mtcnn@raw": ("mtcnn", {"box_adjust": None}),
}


def match(truth_boxes, boxes, threshold=0.5):
    """Greedy matching, detections best first (edge.measure.metrics'): (truth matched flags, false positives)."""
    scores = -np.arange(len(boxes), dtype=np.float32)  # boxes come sorted by score from detect()
    gt_to_det, det_to_gt = greedy_match(np.asarray(truth_boxes, np.float32).reshape(-1, 4),
                                        np.asarray(boxes, np.float32).reshape(-1, 4), scores, threshold)
    return gt_to_det >= 0, int((det_to_gt < 0).sum())


class Tally(object):
    """Counts of found / annotated faces: overall, >= 32 px, per class; false positives."""

    def __init__(self):
        self.n, self.found, self.fp, self.images = {}, {}, 0, 0

    def add(self, faces, boxes):
        hit, fp = match([b for _, b in faces], boxes)
        self.fp += fp
        self.images += 1
        for (label, box), h in zip(faces, hit):
            big = max(box[2] - box[0], box[3] - box[1]) >= 32
            for key in ("all", label) + (("32+",) if big else ()):
                self.n[key] = self.n.get(key, 0) + 1
                self.found[key] = self.found.get(key, 0) + int(h)

    def recall(self, key):
        return self.found.get(key, 0) / float(self.n[key]) if self.n.get(key) else float("nan")


def scenes(data, split="test"):
    """[(image, [(label, box)])] of one kaggle853 split (splits.csv)."""
    return [(cv2.imread(s.path), list(zip(s.labels, s.boxes.tolist())))
            for s in read_voc(os.path.join(data, "kaggle853"), split)]


def fit_box_adjust(detector, items):
    """Median (dx1, dy1, dx2, dy2) from raw detections to their annotations (IoU >= 0.3),
    in units of the detection's width/height: the detectors' ``BOX_ADJUST``."""
    offsets = []
    for image, faces in items:
        boxes = detector.detect(image)[0]
        if not len(boxes) or not faces:
            continue
        truth = np.array([b for _, b in faces], np.float32)
        ious = iou_matrix(boxes, truth)
        for box, row in zip(boxes, ious):
            if row.max() >= 0.3:
                g = truth[row.argmax()]
                wh = np.tile(box[2:] - box[:2], 2)
                offsets.append((g - box) / wh)
    return np.median(np.array(offsets), axis=0), len(offsets)


def video_frames(data, every=10, offset=5):
    """(frame, truth) of one frame per scene of the test video, read with OpenCV."""
    _, truth, _ = read_video_truth(os.path.join(data, "videos", "kaggle853_test_scenes.json"))
    cap = cv2.VideoCapture(os.path.join(data, "videos", "kaggle853_test_scenes.mp4"))
    out, index = [], 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if index % every == offset:
            out.append((frame, list(zip(truth[index].labels, truth[index].boxes.tolist()))))
        index += 1
    cap.release()
    return out


def measure(name, spec, images, frames, repeat, confidence):
    detector = create_detector(spec[0], confidence=confidence, **spec[1])
    still, video = Tally(), Tally()
    for image, faces in images:
        still.add(faces, detector.detect(image)[0])
    for frame, faces in frames:
        video.add(faces, detector.detect(frame)[0])
    for frame, _ in frames[:3]:  # warm-up
        detector.detect(frame)
    times = []
    cpu0 = time.process_time()
    for _ in range(repeat):
        for frame, _ in frames:
            t0 = time.perf_counter()
            detector.detect(frame)
            times.append(time.perf_counter() - t0)
    # CPU time per frame (all threads): less sensitive than wall time to other processes
    # competing for the two cores, and the minimum wall time approximates an idle machine.
    if not times:  # --repeat 0: recall only
        return {"config": name, "p50_ms": np.nan, "p95_ms": np.nan, "min_ms": np.nan,
                "cpu_ms": np.nan, "fps": np.nan, "still": still, "video": video}
    cpu_ms = (time.process_time() - cpu0) * 1000.0 / len(times)
    ms = np.percentile(np.array(times) * 1000, [50, 95])
    return {"config": name, "p50_ms": ms[0], "p95_ms": ms[1], "min_ms": min(times) * 1000,
            "cpu_ms": cpu_ms, "fps": 1000.0 / ms[0], "still": still, "video": video}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=os.path.join("..", "shared", "data"))
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--repeat", type=int, default=1, help="timing passes over the 40 frames (0: recall only)")
    parser.add_argument("--confidence", type=float, default=0.5)
    parser.add_argument("--threads", type=int, help="cv2.setNumThreads for the run")
    parser.add_argument("--fit-box-adjust", action="store_true",
                        help="print each config's box adjustment fitted on the train split")
    args = parser.parse_args(argv)
    if args.threads:
        cv2.setNumThreads(args.threads)
    if args.fit_box_adjust:
        train = scenes(args.data, "train")
        for name in args.configs:
            detector = create_detector(CONFIGS[name][0], confidence=0.3, box_adjust=None, **CONFIGS[name][1])
            adjust, n = fit_box_adjust(detector, train)
            print("%-14s BOX_ADJUST = (%s)  # %d matched train faces"
                  % (name, ", ".join("%.3f" % v for v in adjust), n))
        return
    images = scenes(args.data, "test")
    frames = video_frames(args.data)
    print("%d test images (%d faces), %d video frames 1280x720 (%d faces); recall at IoU 0.5"
          % (len(images), sum(len(f) for _, f in images), len(frames), sum(len(f) for _, f in frames)))
    head = "%-14s %6s %6s %6s %6s %5s | %-31s | %-31s" % (
        "config", "p50ms", "p95ms", "minms", "cpums", "fps", "stills: all  32px+ mask nomask FP/im",
        "video:  all  32px+ mask nomask FP/im")
    print(head)
    for name in args.configs:
        r = measure(name, CONFIGS[name], images, frames, args.repeat, args.confidence)
        cells = []
        for t in (r["still"], r["video"]):
            cells.append("%11.2f %5.2f %5.2f %5.2f %5.2f" % (
                t.recall("all"), t.recall("32+"), t.recall("mask"), t.recall("no_mask"),
                t.fp / float(t.images)))
        print("%-14s %6.1f %6.1f %6.1f %6.1f %5.1f | %s | %s" % (
            name, r["p50_ms"], r["p95_ms"], r["min_ms"], r["cpu_ms"], r["fps"], cells[0], cells[1]))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
