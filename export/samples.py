"""Real face crops for export checks (PyTorch vs ONNX, engine vs ONNX) and INT8 calibration.

Torch-free and Python 3.6-compatible: ``export.trt`` uses it on the Jetson. Images come back
as ``(name, rgb)`` pairs, un-resized (each check applies the model's own preprocessing).

``python -m export.samples --out models/verify_faces`` writes the small set of CC0 kaggle853
crops that ships with the model, so that a device can check the engine it builds.
"""
import argparse
import os
import sys

import cv2

from edge.errors import ConfigError
from edge.infer.preprocess import expand_box
from edge.infer.samples import folder_images, shipped_faces, spread
from edge.measure.truth import read_voc


def default_data_root():
    """The development data (``../shared/data`` next to the repository), or ``$MASKGATE_DATA``."""
    env = os.environ.get("MASKGATE_DATA")
    if env:
        return env
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(os.path.dirname(repo), "shared", "data")


def voc_crops(root, limit, margin=0.15, split=None, min_side=8):
    """Up to ``limit`` face crops ``(name, rgb, label)`` from a VOC scene set, spread over its faces."""
    faces = [(truth, box, label) for truth in read_voc(root, split)
             for box, label in zip(truth.boxes, truth.labels)
             if min(box[2] - box[0], box[3] - box[1]) >= min_side]  # skip the unreadably tiny
    out = []
    for truth, box, label in spread(faces, limit):
        bgr = cv2.imread(truth.path, cv2.IMREAD_COLOR)
        if bgr is None:
            continue
        x1, y1, x2, y2 = expand_box(box, margin, bgr.shape[1], bgr.shape[0])
        rgb = cv2.cvtColor(bgr[y1:y2, x1:x2], cv2.COLOR_BGR2RGB)
        out.append(("%s@%d,%d" % (truth.key, box[0], box[1]), rgb, label))
    return out


def verification_images(folder=None, limit=48, margin=0.15, model=None):
    """Face images for a check: from ``folder`` if given (images, or a VOC scene set), else the
    crops shipped beside ``model``, else the development data.

    The development data mixes fmd's two class folders (tight crops) with kaggle853 scene
    crops (small, blurry faces: the regime the Nano sees). Returns ``(name, rgb)`` pairs;
    raises ``FileNotFoundError`` naming what to pass when nothing is found.
    """
    if folder is not None:
        if not os.path.isdir(folder):
            raise FileNotFoundError("verification folder not found: %s" % folder)
        if os.path.isdir(os.path.join(folder, "annotations")):  # a VOC scene set: its face boxes
            images = [(n, rgb) for n, rgb, _ in voc_crops(folder, limit, margin)]
        else:
            images = folder_images(folder, limit)
        if not images:
            raise FileNotFoundError("no decodable images in %s" % folder)
        return images
    if model is not None and shipped_faces(model, limit):
        return shipped_faces(model, limit)
    root = default_data_root()
    third = max(1, limit // 3)
    images = []
    for sub in ("with_mask", "without_mask"):
        path = os.path.join(root, "fmd", sub)
        if os.path.isdir(path):
            images += [(os.path.join(sub, n), rgb) for n, rgb in folder_images(path, third)]
    kaggle = os.path.join(root, "kaggle853")
    if os.path.isdir(kaggle):
        images += [(n, rgb) for n, rgb, _ in voc_crops(kaggle, limit - len(images), margin)]
    if not images:
        raise FileNotFoundError("no verification images: %s is absent; pass --verify FOLDER "
                                "(a folder of face images)" % root)
    return images


def write_shipped_faces(out, root=None, per_class=16, margin=0.15):
    """Write ``per_class`` crops of each class from kaggle853's train scenes (CC0) into ``out``."""
    root = root or os.path.join(default_data_root(), "kaggle853")
    os.makedirs(out, exist_ok=True)
    crops = voc_crops(root, 100000, margin, split="train", min_side=16)
    written = 0
    for label in ("mask", "no_mask", "incorrect"):
        for name, rgb, _ in spread([c for c in crops if c[2] == label], per_class):
            stem = os.path.splitext(name.split("@")[0])[0] + "_" + name.split("@")[1].replace(",", "_")
            path = os.path.join(out, "%s_%s.jpg" % (label, stem))
            cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
            written += 1
    return written


def main(argv=None):
    """Command line: write the face crops that ship with the model."""
    parser = argparse.ArgumentParser(prog="python -m export.samples", description=main.__doc__)
    parser.add_argument("--out", required=True, help="folder to write (e.g. models/verify_faces)")
    parser.add_argument("--data", help="kaggle853 folder (default: the development data's)")
    parser.add_argument("--per-class", type=int, default=16, help="crops per class (default 16)")
    args = parser.parse_args(argv)
    try:
        written = write_shipped_faces(args.out, args.data, args.per_class)
    except (ConfigError, OSError) as exc:  # a missing data folder, an unwritable output
        print("error: %s" % exc, file=sys.stderr)
        return 1
    print("wrote %d face crops to %s" % (written, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
