"""Face boxes for whole-image data (a folder per class), found by the deployed face detector.

Folder data sets frame their classes differently (in fmd the masked photos are looser), so
a model trained on whole images can learn the framing instead of the mask. Cropping every
image where the edge service would crop it (the same detector, its box correction, then
the model's crop margin) removes that shortcut and matches what the model sees deployed.

Boxes are cached per file content (sha256) and detector settings, so a second run (or a
grid search) does not detect again.
"""
import hashlib
import json
import os

import cv2
import numpy as np

from edge.common import sha256
from edge.infer import detect
from train.images import read_rgb

CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "maskgate", "face_boxes")
# Tight crops leave a detector no context around the face: pad each side by this share.
PAD = 0.25
DETECTOR_SETTINGS = {"confidence": 0.5, "min_size": 8, "input_size": 640}
CHOICES = ("none",) + tuple(sorted(detect.DETECTORS))  # the --face-crop values


def detector_name(choice):
    """The detector a ``--face-crop`` choice names, or None for ``none`` (whole images)."""
    return None if choice in (None, "none") else choice


def largest_face(detector, rgb):
    """The box (xyxy in ``rgb`` pixels) of the largest face found, or None."""
    h, w = rgb.shape[:2]
    top, side = int(round(h * PAD)), int(round(w * PAD))
    grey = (127, 127, 127)
    padded = cv2.copyMakeBorder(rgb[:, :, ::-1], top, top, side, side, cv2.BORDER_CONSTANT, value=grey)
    boxes, scores = detector.detect(padded)
    if not len(boxes):
        return None
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    best = int(np.argmax(areas))
    x1, y1, x2, y2 = boxes[best] - np.array([side, top, side, top], np.float32)
    return max(0.0, float(x1)), max(0.0, float(y1)), min(float(w), float(x2)), min(float(h), float(y2))


def find_faces(samples, name, hygiene, min_size=8, cache_dir=CACHE_DIR, show=True):
    """Give every whole-image sample (``box`` None) the box of its largest detected face.

    Images where the detector finds no face, or only one smaller than ``min_size``, are
    dropped and counted in ``hygiene`` (deployed, such a face would never be classified).
    Samples that already have a box (scene annotations) pass through unchanged.
    """
    from tqdm import tqdm
    whole = [s for s in samples if s.box is None]
    if not whole:
        return samples
    settings = dict(DETECTOR_SETTINGS, detector=name)
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    cache_path = os.path.join(cache_dir, "%s-%s.json" % (name, key))
    cache = {}
    if os.path.isfile(cache_path):
        with open(cache_path) as f:
            cache = json.load(f)
    detector = None
    boxes = {}
    for path in tqdm(sorted({s.path for s in whole}), desc="finding faces (%s)" % name,
                     unit="img", leave=False, disable=None if show else True):
        digest = sha256(path)
        if digest not in cache:
            if detector is None:
                detector = detect.create_detector(name, **DETECTOR_SETTINGS)
            found = largest_face(detector, read_rgb(path))
            cache[digest] = list(found) if found else None
        boxes[path] = cache[digest]
    if detector is not None:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = cache_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(cache, f)
        os.replace(tmp, cache_path)
    kept = []
    for s in samples:
        if s.box is not None:
            kept.append(s)
            continue
        box = boxes[s.path]
        if box is None:
            hygiene.note("no_face_found_by_%s" % name, s.path)
        elif max(box[2] - box[0], box[3] - box[1]) < min_size:
            hygiene.note("detected_face_below_min_size_%dpx" % min_size, s.path)
        else:
            kept.append(s._replace(box=tuple(box)))
    return kept
