"""Real face crops that checks run on: an engine against onnxruntime, an export against PyTorch.

A model ships with a few dozen of them (``models/verify_faces/``, CC0 kaggle853 crops, made
by ``python -m export.samples --out models/verify_faces``), so that a device without the
workstation's data can still check the engine it builds. Images are decoded with OpenCV
and returned as RGB (the networks' channel order), un-resized: each check applies the
model's own preprocessing.
"""
import os

import cv2

from edge.common import IMAGE_EXTENSIONS

# Beside the model: the crops its engines are checked on.
VERIFY_FOLDER = "verify_faces"


def read_rgb(path):
    """Decode an image file to RGB uint8 (alpha dropped); None when it cannot be decoded."""
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def spread(items, count):
    """``count`` items evenly spaced over a sorted list: deterministic, and not all from one corner."""
    if count >= len(items):
        return list(items)
    step = len(items) / float(count)
    return [items[int(i * step)] for i in range(count)]


def image_files(folder):
    """All image files under ``folder`` (recursively), sorted."""
    found = []
    for root, _, names in os.walk(folder):
        found.extend(os.path.join(root, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS))
    return sorted(found)


def folder_images(folder, limit):
    """Up to ``limit`` decodable images from ``folder`` as ``(relative name, rgb)`` pairs."""
    out = []
    for path in spread(image_files(folder), limit):
        rgb = read_rgb(path)
        if rgb is not None:
            out.append((os.path.relpath(path, folder), rgb))
    return out


def shipped_faces(model_path, limit=200):
    """The face crops shipped beside ``model_path`` (``verify_faces/``), or [] when there are none."""
    folder = os.path.join(os.path.dirname(os.path.abspath(model_path)), VERIFY_FOLDER)
    return folder_images(folder, limit) if os.path.isdir(folder) else []
