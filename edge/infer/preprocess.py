"""The device's copy of ``train.transforms``' evaluation path (no torch).

It must stay numerically identical to train's: ``tests/test_contract.py`` runs the same
real faces through both and compares the class probabilities.
"""
import cv2
import numpy as np


def expand_box(box, margin, width, height):
    """Grow an xyxy face box by ``margin`` of its size on each side, clipped to the image."""
    x1, y1, x2, y2 = [float(v) for v in box]
    dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
    x1, y1 = max(0, int(round(x1 - dx))), max(0, int(round(y1 - dy)))
    x2, y2 = min(width, int(round(x2 + dx))), min(height, int(round(y2 + dy)))
    return x1, y1, x2, y2


def pad_colour(mean):
    """The letterbox fill: the mean colour, which normalizes to zero."""
    return tuple(int(round(m * 255)) for m in mean)


def letterbox(rgb, size, mean):
    """Pad ``rgb`` (HxWx3 uint8) to the aspect ratio of ``size`` (H, W), then resize to it."""
    out_h, out_w = int(size[0]), int(size[1])
    h, w = rgb.shape[:2]
    target_w = max(w, int(round(h * out_w / out_h)))
    target_h = max(h, int(round(target_w * out_h / out_w)))
    top, left = (target_h - h) // 2, (target_w - w) // 2
    padded = cv2.copyMakeBorder(rgb, top, target_h - h - top, left, target_w - w - left,
                                cv2.BORDER_CONSTANT, value=pad_colour(mean))
    shrinking = target_h > out_h or target_w > out_w
    return cv2.resize(padded, (out_w, out_h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def crops_to_batch(frame_bgr, boxes, meta):
    """Cut each xyxy box (with the model's crop margin) out of a BGR frame.

    Returns a float32 NCHW batch normalized as the model was trained, and the list of
    indices of the boxes that gave a non-empty crop (a box outside the frame is skipped).
    """
    h, w = frame_bgr.shape[:2]
    size = meta["input_size"]
    mean = np.asarray(meta["mean"], np.float32)
    std = np.asarray(meta["std"], np.float32)
    batch = np.empty((len(boxes), 3, int(size[0]), int(size[1])), np.float32)
    kept = []
    for i, box in enumerate(boxes):
        x1, y1, x2, y2 = expand_box(box, meta["crop_margin"], w, h)
        if x2 - x1 < 1 or y2 - y1 < 1:
            continue
        # The network was trained on RGB; OpenCV and GStreamer hand us BGR.
        rgb = cv2.cvtColor(frame_bgr[y1:y2, x1:x2], cv2.COLOR_BGR2RGB)
        boxed = letterbox(rgb, size, meta["mean"]).astype(np.float32) / 255.0
        batch[len(kept)] = ((boxed - mean) / std).transpose(2, 0, 1)
        kept.append(i)
    return batch[:len(kept)], kept


def images_to_batch(images, meta):
    """``(name, rgb)`` face images (already cropped) -> the float32 NCHW batch the model takes."""
    mean, std = np.asarray(meta["mean"], np.float32), np.asarray(meta["std"], np.float32)
    rows = [((letterbox(rgb, meta["input_size"], meta["mean"]).astype(np.float32) / 255.0 - mean) / std)
            .transpose(2, 0, 1) for _, rgb in images]
    return np.ascontiguousarray(np.stack(rows), dtype=np.float32)
