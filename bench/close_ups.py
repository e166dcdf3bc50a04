"""Small photos of one face: how many faces the detector finds on each, for enlargement limits.

The edge scales a frame's long side to the detector's input size (960 px for RetinaFace), up
or down. Face-crop sets (fmd's photos, bijoy_webcam's frames: 100-200 px, one face filling
each) are what a new user tries first; enlarged without limit, such a face outgrows the
largest anchors and the detector boxes its parts. For each limit (``--limits``; "none": no
limit), the photos with 0, 1, 2 and 3 or more faces found:

    .venv/bin/python bench/close_ups.py [--data ../shared/data] [--per-folder 100] [--limits none,2,3,4,5]

Drawn at random (seed 0) from fmd/with_mask, fmd/without_mask and every bijoy_webcam class
folder, ``--per-folder`` each, in the edge's own detector at its shipped settings.
"""
import argparse
import glob
import os
import random
import sys

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from edge.infer.detect import create_detector  # noqa: E402

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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.environ.get("MASKGATE_DATA", os.path.join("..", "shared", "data")))
    p.add_argument("--per-folder", type=int, default=100)
    p.add_argument("--limits", default="none,2,3,4,5")
    p.add_argument("--detector", default="retinaface")
    args = p.parse_args(argv)
    images = [image for image in (cv2.imread(path) for path in sample(args.data, args.per_folder))
              if image is not None]
    if not images:
        raise SystemExit("no images under %s (%s)" % (args.data, ", ".join(FOLDERS)))
    print("%d photos, long side median %d px; photos with 0 / 1 / 2 / 3+ faces found:"
          % (len(images), np.median([max(image.shape[:2]) for image in images])))
    for limit in args.limits.split(","):
        detector = create_detector(args.detector, max_upscale=None if limit == "none" else float(limit))
        print("  enlarged at most %-5s %s" % (limit + ("x" if limit != "none" else ""),
                                             " / ".join(str(c) for c in face_counts(detector, images))))


if __name__ == "__main__":
    main()
