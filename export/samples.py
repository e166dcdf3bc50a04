"""Real face crops for export checks: parity (PyTorch vs ONNX, engine vs ONNX) and INT8 calibration.

Torch-free and Python 3.6-compatible: ``export.trt`` uses it on the Jetson. Images are
decoded with OpenCV and returned as RGB (the networks' channel order), un-resized: each
check applies the model's own preprocessing to them.
"""
import os
import xml.etree.ElementTree as ET

import cv2

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def default_data_root():
    """The development data (``../shared/data`` next to the repository), or ``$MASKGATE_DATA``."""
    env = os.environ.get("MASKGATE_DATA")
    if env:
        return env
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(os.path.dirname(repo), "shared", "data")


def _read_rgb(path):
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)  # drops alpha; None for a file it cannot decode
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _spread(items, count):
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
    """Up to ``limit`` decodable images from ``folder`` as ``(name, rgb)`` pairs."""
    out = []
    for path in _spread(image_files(folder), limit):
        rgb = _read_rgb(path)
        if rgb is not None:
            out.append((os.path.relpath(path, folder), rgb))
    return out


def voc_crops(root, limit, margin=0.15):
    """Up to ``limit`` face crops from a PASCAL VOC scene set (``images/`` + ``annotations/``)."""
    ann_dir = os.path.join(root, "annotations")
    if not os.path.isdir(ann_dir):
        return []
    boxes = []
    for xml_name in sorted(os.listdir(ann_dir)):
        if not xml_name.endswith(".xml"):
            continue
        tree = ET.parse(os.path.join(ann_dir, xml_name)).getroot()
        image = os.path.join(root, "images", tree.findtext("filename", ""))
        for obj in tree.iter("object"):
            bb = obj.find("bndbox")
            box = [float(bb.findtext(k, "0")) for k in ("xmin", "ymin", "xmax", "ymax")]
            if box[2] - box[0] >= 8 and box[3] - box[1] >= 8:  # skip the unreadably tiny
                boxes.append((image, box))
    out = []
    for image, (x1, y1, x2, y2) in _spread(boxes, limit):
        rgb = _read_rgb(image)
        if rgb is None:
            continue
        h, w = rgb.shape[:2]
        dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
        crop = rgb[max(0, int(y1 - dy)):min(h, int(y2 + dy)), max(0, int(x1 - dx)):min(w, int(x2 + dx))]
        out.append(("%s@%d,%d" % (os.path.basename(image), x1, y1), crop))
    return out


def verification_images(folder=None, limit=48, margin=0.15):
    """Face images for a check: from ``folder`` if given (images, or a VOC scene set), else the dev data.

    The default mixes fmd's two class folders (tight crops) with kaggle853 scene crops
    (small, blurry faces: the regime the Nano sees). Returns ``(name, rgb)`` pairs;
    raises ``FileNotFoundError`` naming what to pass when nothing is found.
    """
    if folder is not None:
        if not os.path.isdir(folder):
            raise FileNotFoundError("verification folder not found: %s" % folder)
        if os.path.isdir(os.path.join(folder, "annotations")):  # a VOC scene set: its face boxes
            images = voc_crops(folder, limit, margin)
        else:
            images = folder_images(folder, limit)
        if not images:
            raise FileNotFoundError("no decodable images in %s" % folder)
        return images
    root = default_data_root()
    third = max(1, limit // 3)
    images = []
    for sub in ("with_mask", "without_mask"):
        path = os.path.join(root, "fmd", sub)
        if os.path.isdir(path):
            images += [(os.path.join(sub, n), rgb) for n, rgb in folder_images(path, third)]
    images += voc_crops(os.path.join(root, "kaggle853"), limit - len(images), margin)
    if not images:
        raise FileNotFoundError("no verification images: %s is absent; pass --verify FOLDER "
                                "(a folder of face images)" % root)
    return images


def device_batch(images, meta):
    """``(name, rgb)`` pairs -> the float32 NCHW batch the device feeds the model (edge.preprocess)."""
    import numpy as np
    from edge.preprocess import letterbox
    mean, std = np.asarray(meta["mean"], np.float32), np.asarray(meta["std"], np.float32)
    rows = [((letterbox(rgb, meta["input_size"], meta["mean"]).astype(np.float32) / 255.0 - mean) / std)
            .transpose(2, 0, 1) for _, rgb in images]
    return np.ascontiguousarray(np.stack(rows), dtype=np.float32)
