"""Training's transforms: the evaluation path and augmentation, on top of the one preprocessing.

The crop with margin and the letterbox are defined once, in ``edge.infer.preprocess`` (numpy
and OpenCV, no torch), and used here as they are, so a model sees in training exactly what
the device feeds it; ``tests/test_contract.py`` checks the whole path on real faces.
Augmentation runs on the letterboxed crop, on training data only.
"""
import cv2
import numpy as np
import torch
from torchvision.transforms import v2

from edge.infer.preprocess import letterbox, pad_colour
from train.augment import hard_cases


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


# The face sides (px, inclusive) the low-resolution case shrinks a crop to; the bench draws the same.
LOWRES_SIDES = (12, 32)


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

    Works on the letterboxed uint8 crop: optional hard cases (``train.augment``: occluders
    before the mouth, sunglasses, blur) and low resolution, then flip p=0.5, rotation 10
    degrees, colour jitter 0.2/0.2/0.2, perspective 0.1 with p=0.3, a light random affine
    (shift/scale), and optional random erasing (MixUp/CutMix act on batches, see
    ``train.engine``).
    """

    def __init__(self, meta, random_erasing=0.0, lowres=0.0, occluders=0.0, sunglasses=0.0, blur=0.0):
        fill = list(pad_colour(meta["mean"]))
        self.lowres = lowres
        self.hard = {"occluders": occluders, "sunglasses": sunglasses, "blur": blur}
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
        if any(self.hard.values()):
            # Seeded from torch, so that --seed and the DataLoader's worker seeds decide it too.
            boxed = hard_cases(boxed, np.random.default_rng(int(torch.randint(0, 2 ** 31, (1,)).item())), self.hard)
        if self.lowres and torch.rand(1).item() < self.lowres:
            boxed = degrade_resolution(boxed, int(torch.randint(LOWRES_SIDES[0], LOWRES_SIDES[1] + 1, (1,)).item()))
        return self.pipeline(torch.from_numpy(np.ascontiguousarray(boxed.transpose(2, 0, 1))))

    def __call__(self, rgb):
        return self.from_boxed(letterbox(rgb, self.meta["input_size"], self.meta["mean"]))
