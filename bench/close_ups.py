"""Small photos of one face: how many faces the detector finds on each, for enlargement limits.

The edge scales a frame's long side to the detector's input size (960 px for RetinaFace), up
or down. Face-crop sets (fmd's photos, bijoy_webcam's frames: 100-200 px, one face filling
each) are what a new user tries first; enlarged without limit, such a face outgrows the
largest anchors and the detector boxes its parts. For each limit (``--limits``; "none": no
limit), without the close-up pass, then at the edge's default (4x, the close-up pass on: a
second look at half the scale for a face too large to be found whole) and as still-photo mode
runs (the flip pass too), the photos with 0, 1, 2 and 3 or more faces found:

    .venv/bin/python bench/close_ups.py [--data ../shared/data] [--per-folder 100] [--limits none,2,3,4,5]
    .venv/bin/python bench/close_ups.py --cost    # what the close-up pass costs where it is not needed

``--cost``: detection time per frame without and with the close-up pass (best of two runs
each) on kaggle853's and moxa3k's test scenes and every 4th frame of the demo video, and on
how many frames the second pass ran.

Drawn at random (seed 0) from fmd/with_mask, fmd/without_mask and every bijoy_webcam class
folder, ``--per-folder`` each, in the edge's own detector at the edge's settings (the file's
operating point, ``edge/app/default_config.yaml``'s minimum size and NMS overlap).
"""
import argparse
import glob
import os
import random
import sys
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from edge.app import config as edge_config  # noqa: E402
from edge.infer.detect import create_detector  # noqa: E402
from edge.measure.truth import read_voc  # noqa: E402

FOLDERS = ("fmd/with_mask", "fmd/without_mask", "bijoy_webcam/*")


def sample(data, per_folder, seed=0):
    """Paths drawn at random from each folder of ``FOLDERS`` (a glob may name several)."""
    rng = random.Random(seed)
    paths = []
    for pattern in FOLDERS:
        for folder in sorted(glob.glob(os.path.join(data, pattern))):
            files = sorted(glob.glob(os.path.join(folder, "*")))
            paths += rng.sample(files, min(per_folder, len(files)))
    return paths


def face_counts(detector, images):
    """How many images had 0, 1, 2 and 3 or more faces found."""
    counts = np.bincount([min(len(detector.detect(image)[0]), 3) for image in images], minlength=4)
    return [int(c) for c in counts]


def video_frames(path, every=4):
    """Every ``every``-th frame of a video file."""
    capture, frames, index = cv2.VideoCapture(path), [], 0
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        if index % every == 0:
            frames.append(frame)
        index += 1


def detection_cost(detector, frames, repeats=2):
    """(best ms per frame over ``repeats`` runs, frames the detector ran on twice)."""
    passes, run_once = [0], detector._detect_frame

    def counted(frame, image):
        passes[0] += 1
        return run_once(frame, image)

    detector._detect_frame = counted
    detector.detect(frames[0])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        passes[0] = 0
        start = time.perf_counter()
        for frame in frames:
            detector.detect(frame)
        best = min(best, (time.perf_counter() - start) * 1000.0 / len(frames))
    return best, passes[0] - len(frames)


def cost(data, name, settings):
    """Print the close-up pass's cost on the scene sets' test splits and the demo video."""
    sets = [("kaggle853 test", [cv2.imread(t.path) for t in read_voc(os.path.join(data, "kaggle853"), "test")]),
            ("moxa3k test", [cv2.imread(t.path) for t in read_voc(os.path.join(data, "moxa3k"), "test")]),
            ("demo video, every 4th frame", video_frames(os.path.join(data, "videos", "kaggle853_test_scenes.mp4")))]
    print("detection ms per frame, without / with the close-up pass (best of 2):")
    for label, frames in sets:
        without, _ = detection_cost(create_detector(name, close_up_pass=False, **settings), frames)
        with_pass, second = detection_cost(create_detector(name, close_up_pass=True, **settings), frames)
        print("  %-28s %6.1f / %6.1f (%+.0f %%), second pass on %d of %d frames"
              % (label, without, with_pass, 100.0 * (with_pass / without - 1), second, len(frames)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.environ.get("MASKGATE_DATA", os.path.join("..", "shared", "data")))
    p.add_argument("--per-folder", type=int, default=100)
    p.add_argument("--limits", default="none,2,3,4,5")
    p.add_argument("--detector", default="retinaface")
    p.add_argument("--cost", action="store_true", help="time the close-up pass instead (see above)")
    args = p.parse_args(argv)
    det = edge_config.defaults()["detector"]
    settings = dict(confidence=det["confidence"], min_size=det["min_size"], nms_iou=det["nms_iou"])
    if args.cost:
        return cost(args.data, args.detector, settings)
    images = [image for image in (cv2.imread(path) for path in sample(args.data, args.per_folder))
              if image is not None]
    if not images:
        raise SystemExit("no images under %s (%s)" % (args.data, ", ".join(FOLDERS)))
    print("%d photos, long side median %d px; photos with 0 / 1 / 2 / 3+ faces found:"
          % (len(images), np.median([max(image.shape[:2]) for image in images])))
    rows = [("enlarged at most %s" % (limit if limit == "none" else limit + "x"),
             dict(max_upscale=None if limit == "none" else float(limit), close_up_pass=False))
            for limit in args.limits.split(",")]
    rows.append(("the edge's default (4x, close-up pass)", {}))
    rows.append(("still-photo mode (+ the flip pass)", dict(flip_pass=True)))
    for name, options in rows:
        options.update(settings)
        counts = face_counts(create_detector(args.detector, **options), images)
        print("  %-40s %s" % (name, " / ".join(str(c) for c in counts)))


if __name__ == "__main__":
    main()
