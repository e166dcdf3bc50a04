"""Training's transforms: the evaluation path and augmentation, on top of the one preprocessing.

The crop with margin and the letterbox are defined once, in ``edge.infer.preprocess`` (numpy
and OpenCV, no torch), and used here as they are, so a model sees in training exactly what
the device feeds it; ``tests/test_contract.py`` checks the whole path on real faces.
Augmentation runs on the letterboxed crop, on training data only.
"""
import collections

import cv2
import numpy as np
import torch
from torchvision.transforms import v2

from edge.infer.preprocess import expand_box, letterbox, pad_colour
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


# The crop margins that re-framing draws from, each side on its own (fractions of the face
# box): from a box cut at the face's edge to the whole head with hair. The sources frame
# faces differently (moxa3k's boxes are looser than kaggle853's, the deployed detector has its
# own convention), and a model trained on one framing learns it along with the mask.
FRAMING_MARGINS = (0.0, 0.35)


def frame(rgb, box, margins):
    """The crop of ``box`` (xyxy in ``rgb``) grown by ``margins`` (left, top, right, bottom)."""
    x1, y1, x2, y2 = [float(v) for v in box]
    w, h = x2 - x1, y2 - y1
    left, top, right, bottom = margins
    x1, y1 = max(0, int(round(x1 - w * left))), max(0, int(round(y1 - h * top)))
    x2 = min(rgb.shape[1], int(round(x2 + w * right)))
    y2 = min(rgb.shape[0], int(round(y2 + h * bottom)))
    return rgb[y1:y2, x1:x2]


class SceneContext(collections.namedtuple("SceneContext", "rgb box")):
    """A scene face with its surroundings: ``rgb`` cut around ``box`` (xyxy in ``rgb``)."""

    @classmethod
    def cut(cls, scene, box, margin):
        """The face ``box`` of ``scene`` with ``margin`` of its size kept on each side."""
        x1, y1, x2, y2 = expand_box(box, margin, scene.shape[1], scene.shape[0])
        return cls(scene[y1:y2, x1:x2].copy(), [box[0] - x1, box[1] - y1, box[2] - x1, box[3] - y1])

    def crop(self, margin):
        """The face with the model's margin, cut by the device's own ``expand_box``."""
        x1, y1, x2, y2 = expand_box(self.box, margin, self.rgb.shape[1], self.rgb.shape[0])
        return self.rgb[y1:y2, x1:x2]


class TrainTransform:
    """Augmentation as the seed specifies, then normalization; for training data only.

    Works on the letterboxed uint8 crop: optional hard cases (``train.augment``: occluders
    before the mouth, sunglasses, blur) and low resolution, then flip p=0.5, rotation 10
    degrees, colour jitter 0.2/0.2/0.2, perspective 0.1 with p=0.3, a light random affine
    (shift/scale), and optional random erasing (MixUp/CutMix act on batches, see
    ``train.engine``). With ``framing`` a scene face is first cut again, with that
    probability, with four margins drawn from ``FRAMING_MARGINS`` (``from_context``).
    """

    def __init__(self, meta, random_erasing=0.0, lowres=0.0, occluders=0.0, sunglasses=0.0, blur=0.0,
                 framing=0.0):
        fill = list(pad_colour(meta["mean"]))
        self.lowres = lowres
        self.framing = framing
        # How much of a scene face's surroundings the dataset keeps for this transform.
        self.context_margin = max(FRAMING_MARGINS[1], meta["crop_margin"]) if framing else 0.0
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

    def from_context(self, context):
        """Augment a ``SceneContext``: re-framed with probability ``framing``, else the model's crop."""
        if self.framing and torch.rand(1).item() < self.framing:
            low, high = FRAMING_MARGINS
            crop = frame(context.rgb, context.box, (low + (high - low) * torch.rand(4)).tolist())
        else:
            crop = context.crop(self.meta["crop_margin"])
        return self(crop)
