"""Synthesis of one face: its landmarks, a texture chosen for it, three placements.

``TexturePool`` holds the cut textures; ``synthesize`` turns one bare face into its
``mask``, ``incorrect_nose`` and ``incorrect_chin`` versions, cropped as the classifier's
training crops are (the face box plus ``CROP_MARGIN`` of its size on each side).
"""
import collections
import functools
import os
import zlib

import numpy as np

from edge.infer.detectors.retinaface import BOX_ADJUST

# The one crop-with-margin definition (train and the device use it).
from edge.infer.preprocess import expand_box
from train.images import read_rgb

from . import frame
from . import placement as placing
from .landmarks import Skip
from .texture import cut_texture

CROP_MARGIN = 0.15  # the classifier's crop margin (train --crop-margin, metadata crop_margin)
# A texture is drawn among those cut from faces at least this share of the target's
# resolution (eye distance in px), so that a mask is not visibly softer than the face.
MIN_RESOLUTION = 0.75
MIN_CHOICE = 20  # ... or among the sharpest textures, when too few qualify

DEFAULT_CHECK_MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "models", "mask_classifier.onnx")

Result = collections.namedtuple("Result", "candidate face frame_box crop_box wearings images")
# images: {(k, placement name): HxWx3 uint8 RGB crop}; wearings: one Wearing per k.


@functools.lru_cache(maxsize=4)
def load(path):
    """A photo as RGB, cached: a scene with several faces is decoded once (callers go
    through faces in path order)."""
    return read_rgb(path)


class LabelCheck:
    """The shipped classifier as a second opinion on a face's annotation.

    Scene labels have errors (moxa3k put incorrectly worn masks under ``mask`` and
    ``nomask``; kaggle853 has a bare face labelled masked): a "bare" face that already
    wears a mask would give a mask under a mask labelled ``incorrect``, and a "masked" face
    that is bare gives a skin texture. A face is used only when the classifier agrees.
    Colour rules were tried first and told bare noses from masked ones far less well.
    """

    def __init__(self, model_path):
        from edge.infer.classify.ort import OrtClassifier
        self.classifier = OrtClassifier(model_path, providers=["CPUExecutionProvider"])
        self.meta = self.classifier.meta

    def agrees(self, rgb, box, label):
        """True when the classifier's top class for the face at ``box`` is ``label``."""
        from edge.infer.preprocess import crops_to_batch
        batch, kept = crops_to_batch(np.ascontiguousarray(rgb[:, :, ::-1]), [box], self.meta)
        if not kept:
            return False
        probs = self.classifier.predict(batch)[0]
        return self.classifier.classes[int(np.argmax(probs))] == label


class TexturePool:
    """The textures kept, and the choice of one for a target face."""

    def __init__(self, textures):
        self.textures = sorted(textures, key=lambda t: t.eye_dist)
        self.eye_dist = np.array([t.eye_dist for t in self.textures], np.float32)

    def __len__(self):
        return len(self.textures)

    def choose(self, eye_dist, rng, count=1):
        """``count`` different textures, at random among those fine enough for a face whose
        eyes are ``eye_dist`` px apart."""
        if not self.textures:
            raise ValueError("no textures: every masked face was skipped (see the skip counts)")
        first = int(np.searchsorted(self.eye_dist, MIN_RESOLUTION * eye_dist))
        first = min(first, max(0, len(self.textures) - MIN_CHOICE))
        picks = rng.choice(len(self.textures) - first, size=min(count, len(self.textures) - first), replace=False)
        return [self.textures[first + int(i)] for i in picks]


def build_textures(finder, faces, skips, check=None, progress=None):
    """Cut a texture from every masked face (that ``check``, a ``LabelCheck``, agrees is
    masked); refusals are counted in ``skips``."""
    textures = []
    for c in sorted(faces, key=lambda c: (c.path, c.id)):
        try:
            rgb = load(c.path)
            face = finder.find(rgb, c.box)
            if check is not None and not check.agrees(rgb, frame_box(c, face, rgb.shape[1], rgb.shape[0]), "mask"):
                raise Skip("texture_face_looks_bare")
            textures.append(cut_texture(rgb, face, c.id, source=c.source, image=c.path))
        except Skip as skip:
            skips[skip.reason] += 1
        if progress is not None:
            progress.update(1)
    return TexturePool(textures)


def face_rng(seed, face_id, *keys):
    """A random stream of one face (``keys``: which one): fixed by the seed and the face
    alone, so that a face comes out the same whatever else is generated with it."""
    return np.random.default_rng([int(seed), zlib.crc32(face_id.encode())] + [int(k) for k in keys])


def frame_box(candidate, face, width, height):
    """The box the classifier's crop grows from: the annotation of a scene face; for a
    whole image, the detector's box with the edge service's correction (``BOX_ADJUST``),
    as ``train --face-crop retinaface`` crops it."""
    if candidate.box is not None:
        return tuple(float(v) for v in candidate.box)
    x1, y1, x2, y2 = face.box
    w, h = x2 - x1, y2 - y1
    dx1, dy1, dx2, dy2 = BOX_ADJUST
    return (max(0.0, x1 + dx1 * w), max(0.0, y1 + dy1 * h),
            min(float(width), x2 + dx2 * w), min(float(height), y2 + dy2 * h))


def synthesize(finder, candidate, pool, per_face=1, seed=0, check=None, placements=None):
    """The worn versions of one bare face: a ``Result``, or raise ``Skip`` with the reason.

    ``per_face`` textures are worn, each in every placement (``placement.PLACEMENTS``);
    the placements of one texture share everything but where it sits. ``check``: a
    ``LabelCheck`` that must agree the face is bare, or None.
    """
    placements = placements or list(placing.PLACEMENTS.values())
    rgb = load(candidate.path)
    face = finder.find(rgb, candidate.box)
    skin = placing.target_skin(rgb, face)
    box = frame_box(candidate, face, rgb.shape[1], rgb.shape[0])
    if check is not None and not check.agrees(rgb, box, "no_mask"):
        raise Skip("target_looks_masked")
    crop = expand_box(box, CROP_MARGIN, rgb.shape[1], rgb.shape[0])
    if crop[2] - crop[0] < 2 or crop[3] - crop[1] < 2:
        raise Skip("empty_crop")
    # A close-up cut off above the chin has no room for a mask pulled down onto it. The
    # whole face is skipped, not that placement alone, so that every class is made of the
    # same faces (else tight close-ups would be "mask" only: a framing shortcut).
    chin = placing.fit(face.landmarks) @ np.array([56.0, frame.CHIN_Y, 1.0], np.float32)
    if chin[1] > crop[3]:
        raise Skip("chin_outside_photo")
    eye_dist = float(np.linalg.norm(face.landmarks[1] - face.landmarks[0]))
    textures = pool.choose(eye_dist, face_rng(seed, candidate.id, 0), per_face)
    wearings, images = [], {}
    for k, texture in enumerate(textures):
        wearing = placing.prepare(rgb, face, texture, skin, face_rng(seed, candidate.id, 1, k), crop)
        wearings.append(wearing)
        for p in placements:
            images[(k, p.name)] = placing.wear(rgb, face, wearing, p, crop)
    return Result(candidate, face, box, crop, wearings, images)
