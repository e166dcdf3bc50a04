"""VOC scene sets -> scenes with face boxes, after a hygiene pass that says what it dropped.

A scene set is ``images/`` + ``annotations/*.xml`` + ``splits.csv`` (columns image, split),
read with the edge's own reader (``edge.measure.truth.read_voc``, so class synonyms are the
product's). Every annotated class is a face. Hygiene, per scene:

- an image that cannot be decoded, or that ``splits.csv`` does not place: skipped, counted;
- an empty annotation: skipped, counted (in these sets an empty file means "not
  annotated", not "no face", so it cannot serve as a negative);
- a box with no area: the scene is skipped (a half-written annotation);
- a box past the image border by at most ``CLIP_TOLERANCE`` (kaggle853 has 12 boxes ending
  at x = 401 in 400 px wide images): clipped, counted; further out: the scene is skipped;
- a train scene that is a near-copy (dHash within 6 bits) of a val or test scene of any
  set loaded: dropped from train, counted (kaggle853's train split holds copies of 4 test
  and 2 val scenes).
"""
import collections
import os
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge.measure.truth import read_splits, read_voc

SPLITS = ("train", "val", "test")
CLIP_TOLERANCE = (2.0, 0.1)  # pixels, or this share of the box's side, whichever is larger
NEAR_COPY_BITS = 6
# Licences of the scene sets this project uses (shared/data/README.md); others: say so.
LICENCES = {
    "kaggle853": "CC0-1.0 (public 'Face Mask Detection' set, 853 scenes)",
    "moxa3k": "research data, no licence stated (Moxa3K, 2020, web-scraped scenes, stock "
              "watermarks): a model trained on it says so in its card",
}


@dataclass
class Scene:
    """One annotated image: boxes float32 (N, 4) xyxy in its pixels, in its source's convention."""
    source: str
    key: str
    path: str
    split: str
    width: int
    height: int
    boxes: np.ndarray
    labels: list
    ignore: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))


def licence_of(source):
    """The licence note of a scene set by its folder name."""
    return LICENCES.get(source, "unknown: check the data's licence before shipping a model")


def check_boxes(boxes, width, height):
    """(clipped boxes, problem or None, number clipped) for one scene's boxes."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if not len(boxes):
        return boxes, "empty annotation", 0
    if ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).any():
        return boxes, "box without area", 0
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    slack = np.maximum(CLIP_TOLERANCE[0], CLIP_TOLERANCE[1] * side)[:, None]
    limit = np.array([0, 0, width, height], np.float32)
    past = np.concatenate([limit[None, :2] - boxes[:, :2], boxes[:, 2:] - limit[None, 2:]], axis=1)
    if (past > slack).any():
        return boxes, "box outside the image", 0
    clipped = int((past > 0).any(axis=1).sum())
    out = boxes.copy()
    np.clip(out[:, 0::2], 0, width, out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, height, out=out[:, 1::2])
    return out, None, clipped


def dhash(gray):
    """64-bit difference hash of a grey image, as a bool array."""
    small = cv2.resize(gray, (9, 8), interpolation=cv2.INTER_AREA)
    return (small[:, 1:] > small[:, :-1]).ravel()


def load_scene_set(root):
    """All scenes of one VOC set: ({split: [Scene]}, hygiene Counter, {key: dHash})."""
    source = os.path.basename(os.path.normpath(root))
    splits = read_splits(root)
    hygiene = collections.Counter()
    out = {s: [] for s in SPLITS}
    hashes = {}
    for truth in read_voc(root):
        name = os.path.basename(truth.path)
        split = splits.get(name)
        if split not in out:
            hygiene["skipped: not in splits.csv"] += 1
            continue
        gray = cv2.imread(truth.path, cv2.IMREAD_GRAYSCALE)
        if gray is None:
            hygiene["skipped: image cannot be decoded"] += 1
            continue
        height, width = gray.shape
        boxes, problem, clipped = check_boxes(truth.boxes, width, height)
        if problem:
            hygiene["skipped: " + problem] += 1
            continue
        if clipped:
            hygiene["boxes clipped to the image (<= %g px or %g of the side past it)"
                    % CLIP_TOLERANCE] += clipped
        key = "%s/%s" % (source, name)
        hashes[key] = dhash(gray)
        out[split].append(Scene(source, key, truth.path, split, width, height, boxes, truth.labels))
    return out, hygiene, hashes


def drop_near_copies(sets, hashes, max_bits=NEAR_COPY_BITS):
    """Remove from every set's train split the scenes that nearly copy a val/test scene of
    any set; returns {source: [(train key, held-out key)]} of what was dropped."""
    held = [(s.key, hashes[s.key]) for split in sets.values() for name in ("val", "test")
            for s in split[name]]
    if not held:
        return {}
    held_keys = [k for k, _ in held]
    held_bits = np.stack([h for _, h in held])
    dropped = {}
    for source, split in sets.items():
        keep = []
        for scene in split["train"]:
            dist = (held_bits != hashes[scene.key]).sum(axis=1)
            j = int(np.argmin(dist))
            if dist[j] <= max_bits:
                dropped.setdefault(source, []).append((scene.key, held_keys[j]))
            else:
                keep.append(scene)
        split["train"] = keep
    return dropped


def load_sets(roots):
    """Load scene sets: (sets {source: {split: [Scene]}}, summary dict for the checkpoint)."""
    sets, summary, hashes = {}, {}, {}
    for root in roots:
        split, hygiene, hash_of = load_scene_set(root)
        source = os.path.basename(os.path.normpath(root))
        if source in sets:
            raise ValueError("two scene sets named %s: rename one folder" % source)
        sets[source] = split
        hashes.update(hash_of)
        summary[source] = {"folder": os.path.abspath(root), "licence": licence_of(source),
                           "hygiene": dict(hygiene)}
    dropped = drop_near_copies(sets, hashes)
    for source, split in sets.items():
        entry = summary[source]
        entry["near_copies_dropped_from_train"] = [list(p) for p in dropped.get(source, [])]
        entry["scenes"] = {s: len(v) for s, v in split.items()}
        entry["faces"] = {s: int(sum(len(x.boxes) for x in v)) for s, v in split.items()}
    return sets, summary


def hygiene_lines(summary):
    """Human-readable hygiene summary, one line per fact."""
    lines = []
    for source, entry in summary.items():
        lines.append("%s: scenes %s, faces %s" % (source, entry["scenes"], entry["faces"]))
        for what, n in sorted(entry["hygiene"].items()):
            lines.append("  %s: %d" % (what, n))
        for train_key, held_key in entry["near_copies_dropped_from_train"]:
            lines.append("  train scene %s dropped: near-copy of %s" % (train_key, held_key))
    return lines


class TrainScenes(object):
    """A map-style dataset of augmented training crops (a ``torch.utils.data.Dataset`` by duck
    typing): item -> (float32 3xSxS image minus the mean, boxes (N, 4), ignore (M, 4)).

    ``to_common``: {source: adjustment} mapping each source's boxes into the training box
    convention (``boxstyle``); scenes' ``ignore`` regions are already in it. Images are read
    from disk per item, never held all at once.
    """

    def __init__(self, scenes, augment, to_common=None, seed=0):
        self.scenes = list(scenes)
        self.augment = augment
        self.to_common = to_common or {}
        self.seed = seed
        self.epoch = 0

    def __len__(self):
        return len(self.scenes)

    def __getitem__(self, index):
        import random

        from train.detector import boxstyle
        from train.detector.augment import preprocess
        scene = self.scenes[index]
        image = cv2.imread(scene.path, cv2.IMREAD_COLOR)
        if image is None:
            raise IOError("cannot decode %s" % scene.path)
        boxes = boxstyle.apply(scene.boxes, self.to_common.get(scene.source))
        # One generator per (seed, epoch, item): reproducible whatever the loader's order.
        rng = random.Random(hash((self.seed, self.epoch, index)) & 0xFFFFFFFF)
        image, boxes, ignore = self.augment(image, boxes, scene.ignore, rng)
        return preprocess(image)[0], boxes.astype(np.float32), ignore.astype(np.float32)


def collate(batch):
    """Stack images; keep per-image box lists (their lengths differ)."""
    import torch
    images = torch.from_numpy(np.stack([b[0] for b in batch]))
    return images, [torch.from_numpy(b[1]) for b in batch], [torch.from_numpy(b[2]) for b in batch]
