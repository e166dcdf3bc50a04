"""THE preprocessing definition: crop with margin, letterbox, normalize; plus augmentation.

The deterministic part (``expand_box``, ``letterbox``, ``normalize``) works on numpy
uint8 RGB arrays with OpenCV, so that ``edge/preprocess.py`` (the device's copy, no torch)
reproduces it exactly; ``tests/test_contract.py`` pins the two equal. Augmentation runs
on the letterboxed crop, on training data only.
"""
import cv2
import numpy as np
import torch
from torchvision.transforms import v2


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
    """Pad ``rgb`` (HxWx3 uint8) to the aspect ratio of ``size`` (H, W), then resize to it.

    Bilinear when enlarging; area averaging (bilinear's anti-aliased form) when shrinking,
    so a 500 px photo and a 20 px face both keep their detail without aliasing.
    """
    out_h, out_w = int(size[0]), int(size[1])
    h, w = rgb.shape[:2]
    target_w = max(w, int(round(h * out_w / out_h)))
    target_h = max(h, int(round(target_w * out_h / out_w)))
    top, left = (target_h - h) // 2, (target_w - w) // 2
    padded = cv2.copyMakeBorder(rgb, top, target_h - h - top, left, target_w - w - left,
                                cv2.BORDER_CONSTANT, value=pad_colour(mean))
    shrinking = target_h > out_h or target_w > out_w
    return cv2.resize(padded, (out_w, out_h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def normalize(rgb, mean, std):
    """uint8 HxWx3 RGB -> float32 3xHxW, ``(x / 255 - mean) / std``."""
    x = rgb.astype(np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def eval_transform(rgb, meta):
    """The evaluation path: letterboxed, normalized CHW tensor for one RGB image."""
    return EvalTransform(meta).from_boxed(letterbox(rgb, meta["input_size"], meta["mean"]))


class EvalTransform:
    """Letterbox and normalize; ``from_boxed`` starts from an already letterboxed crop."""

    def __init__(self, meta):
        self.meta = meta

    def from_boxed(self, boxed):
        return torch.from_numpy(normalize(boxed, self.meta["mean"], self.meta["std"]))

    def __call__(self, rgb):
        return self.from_boxed(letterbox(rgb, self.meta["input_size"], self.meta["mean"]))


def degrade_resolution(boxed, side):
    """Shrink to ``side`` px and back: a sharp photo made to look like a 12-32 px face far away.

    Deployed cameras see most faces at 15-40 px (kaggle853's median is 25 px) while
    folder data sets are often close-ups; this teaches the model the small-face look.
    """
    h, w = boxed.shape[:2]
    if side >= min(h, w):
        return boxed
    small = cv2.resize(boxed, (side, max(1, round(side * h / w))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


class TrainTransform:
    """Augmentation as the seed specifies, then normalization; for training data only.

    Works on the letterboxed uint8 crop: flip p=0.5, rotation 10 degrees, colour jitter
    0.2/0.2/0.2, perspective 0.1 with p=0.3, a light random affine (shift/scale), and
    optional random erasing (MixUp/CutMix act on batches, see ``train.engine``).
    """

    def __init__(self, meta, random_erasing=0.0, lowres=0.0):
        fill = list(pad_colour(meta["mean"]))
        self.lowres = lowres
        steps = [
            v2.RandomHorizontalFlip(0.5),
            v2.RandomRotation(10, fill=fill),
            v2.ColorJitter(0.2, 0.2, 0.2),
            v2.RandomPerspective(0.1, p=0.3, fill=fill),
            v2.RandomAffine(degrees=0, translate=(0.05, 0.05), scale=(0.9, 1.1), fill=fill),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(meta["mean"], meta["std"]),
        ]
        if random_erasing > 0:
            steps.append(v2.RandomErasing(p=random_erasing))
        self.pipeline = v2.Compose(steps)
        self.meta = meta

    def from_boxed(self, boxed):
        if self.lowres and torch.rand(1).item() < self.lowres:
            boxed = degrade_resolution(boxed, int(torch.randint(12, 33, (1,)).item()))
        return self.pipeline(torch.from_numpy(np.ascontiguousarray(boxed.transpose(2, 0, 1))))

    def __call__(self, rgb):
        return self.from_boxed(letterbox(rgb, self.meta["input_size"], self.meta["mean"]))
