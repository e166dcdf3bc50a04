"""Wear a mask texture on a bare face: correctly, under the nose, or on the chin.

The three placements are made the same way from the same texture, with the same light
matching, feathering, resampling and jitter; they differ only in where the texture sits
in the canonical frame (how far down, and how much it is bunched up). A paste artefact
then looks the same in every class, and what a classifier can learn to tell them apart is
where the mask sits on the face.
"""
import collections

import cv2
import numpy as np

from . import frame
from .landmarks import Skip, turn
from .texture import flipped

Placement = collections.namedtuple("Placement", "name label span at width height")
# The texture's top edge (its centre) goes to ``a + f * (b - a)`` down the face, where
# (a, b) = ``span`` names two of the face's own landmark heights (eyes, nose tip, mouth
# line; measured on the face, not the template, so that "under the nose" is under this
# nose) and f is drawn from ``at``; width/height: the texture's scale across and down (a
# mask pulled down sits on a narrower part of the face and folds up); (low, high) ranges.
PLACEMENTS = collections.OrderedDict((p.name, p) for p in (
    # over the nose bridge, a fifth of the way from the eyes to the nose tip: all covered
    Placement("mask", "mask", ("eyes", "nose"), (0.12, 0.32), (0.98, 1.04), (1.0, 1.08)),
    # under the nostrils, a third of the way from the nose tip to the mouth: the nose is
    # out, the upper lip still covered
    Placement("incorrect_nose", "incorrect", ("nose", "mouth"), (0.25, 0.45), (0.92, 0.98), (0.85, 0.95)),
    # under the lower lip (half a nose-to-mouth distance below the mouth line), bunched up
    # on the chin: nose and mouth out
    Placement("incorrect_chin", "incorrect", ("nose", "mouth"), (1.4, 1.6), (0.82, 0.9), (0.65, 0.8)),
))
PIVOT = np.array([56.0, frame.MASK_TOP], np.float32)  # the top centre of the texture
# How strongly the texture takes the target's light: a half-way match (in log terms),
# because the skin-based light estimate also carries the two people's skin tones.
LIGHT_STRENGTH = 0.5
HIGHLIGHT = 245.0
EYE_REGION = (24.0, 40.0, 88.0, 62.0)  # brows, eyes, lids: where a face shows its sharpness
BLURS = (0.0, 0.5, 0.8, 1.1, 1.5, 2.0)  # Gaussian sigmas tried on the texture, px
# A frontal texture on a head turned further than this (landmarks.turn: about 30 degrees)
# sticks out past the far cheek.
MAX_TURN = 0.25


def fit(landmarks):
    """Template units -> image pixels for a face: an affine on the five landmarks, which
    follows a turned head's foreshortening; the texture's vertical placement stays tied to
    the nose and mouth because they are among the points fitted."""
    return frame.affine(frame.TEMPLATE, landmarks)


def target_skin(rgb, face):
    """The face's skin colour and light (median RGB); raises ``Skip`` for a head turned
    too far for a frontal texture, or a face whose skin patch is outside the photo."""
    if abs(turn(face.landmarks)) > MAX_TURN:
        raise Skip("turned_face")
    skin = frame.region_median(rgb, fit(face.landmarks), frame.SKIN_PATCHES)
    if skin is None:
        raise Skip("target_outside_image")
    return skin


def draw_jitter(rng):
    """The jitter shared by the placements of one (face, texture) pair: mirror, scale,
    sideways shift (units), roll (degrees), and one uniform draw per placement range."""
    return {"flip": bool(rng.random() < 0.5), "scale": float(rng.uniform(0.96, 1.04)),
            "dx": float(rng.uniform(-1.5, 1.5)), "roll": float(rng.uniform(-3, 3)),
            "u": [float(v) for v in rng.random(3)]}


def light_gain(texture_skin, target_skin, brightest=255.0):
    """Per-channel gain that moves the texture part way to the target's light; it brightens
    no further than takes the texture's ``brightest`` level to ``HIGHLIGHT`` (a white mask
    made brighter would turn into a flat white blob)."""
    src = np.maximum(np.asarray(texture_skin, np.float32), 8.0)
    dst = np.maximum(np.asarray(target_skin, np.float32), 8.0)
    gain = float(np.clip((dst.mean() / src.mean()) ** LIGHT_STRENGTH, 0.6, 1.6))
    gain = min(gain, max(1.0, HIGHLIGHT / max(float(brightest), 1.0)))
    # colour cast, weaker still: it is mostly skin-tone difference
    cast = ((dst / dst.mean()) / (src / src.mean())) ** (LIGHT_STRENGTH / 2)
    return gain * np.clip(cast, 0.92, 1.08)


def sharpness(gray):
    """Detail lost to a 1 px blur (mean |Laplacian| before / after): about 3 for a sharp
    photo, under 2 for a blurred or upscaled one."""
    g = gray.astype(np.float32)
    before = np.abs(cv2.Laplacian(g, cv2.CV_32F)).mean()
    after = np.abs(cv2.Laplacian(cv2.GaussianBlur(g, (0, 0), 1.0), cv2.CV_32F)).mean()
    return float(before / max(after, 1e-3))


def heights(landmarks):
    """The face's eye, nose-tip and mouth heights in template units (through ``fit``)."""
    pts = cv2.transform(np.asarray(landmarks, np.float32)[None], frame.invert(fit(landmarks)))[0]
    return {"eyes": float(pts[:2, 1].mean()), "nose": float(pts[2, 1]), "mouth": float(pts[3:, 1].mean())}


def placement_matrix(placement, jitter, levels):
    """Units -> units: move the texture from where it was cut to where ``placement`` puts
    it on a face whose landmark heights (``heights``) are ``levels``."""
    u = jitter["u"]
    a, b = levels[placement.span[0]], levels[placement.span[1]]
    top = a + (placement.at[0] + u[0] * (placement.at[1] - placement.at[0])) * (b - a)
    sx = jitter["scale"] * (placement.width[0] + u[1] * (placement.width[1] - placement.width[0]))
    sy = jitter["scale"] * (placement.height[0] + u[2] * (placement.height[1] - placement.height[0]))
    t = np.deg2rad(jitter["roll"])
    lin = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) @ np.diag([sx, sy])
    shift = np.array([PIVOT[0] + jitter["dx"], top]) - lin @ PIVOT
    return np.hstack([lin, shift[:, None]]).astype(np.float32)


Wearing = collections.namedtuple("Wearing", "texture jitter gain blur")


def _warped(landmarks, wearing, placement, region):
    """The texture's RGB and alpha (0..1) warped into ``region`` of the photo (float32)."""
    texture = wearing.texture
    tex_to_units = np.array([[1 / frame.SCALE, 0, texture.origin[0]],
                             [0, 1 / frame.SCALE, texture.origin[1]]], np.float32)
    m = frame.compose(placement_matrix(placement, wearing.jitter, heights(landmarks)), tex_to_units)
    m = frame.compose(fit(landmarks), m)
    m[:, 2] -= (region[0], region[1])
    rgba = frame.warp(texture.rgba, m, (region[2] - region[0], region[3] - region[1])).astype(np.float32)
    if wearing.blur > 0:
        rgba = cv2.GaussianBlur(rgba, (0, 0), wearing.blur)
    return rgba[:, :, :3], rgba[:, :, 3:] / 255.0


def prepare(rgb, face, texture, skin, rng, region):
    """Everything the placements of one (face, texture) pair share: a ``Wearing``.

    Draws the jitter, mirrors the texture if it says so, and measures the light gain and
    the blur that makes the texture as sharp as the face's eyes (a crisp mask on a soft,
    upscaled or compressed face would be the first thing to catch the eye).
    """
    jitter = draw_jitter(rng)
    if jitter["flip"]:
        texture = flipped(texture)
    core = texture.rgba[:, :, :3][texture.rgba[:, :, 3] > 128]
    brightest = float(np.percentile(core.max(axis=1), 98)) if len(core) else 255.0
    wearing = Wearing(texture, jitter, light_gain(texture.skin, skin, brightest), 0.0)
    m = fit(face.landmarks)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2].astype(np.float64)))))
    x1, y1, x2, y2 = EYE_REGION
    size = (max(8, int((x2 - x1) * scale)), max(4, int((y2 - y1) * scale)))
    eyes = frame.warp(rgb, frame.compose(frame.units_to_pixels(scale, (x1, y1)), frame.invert(m)), size)
    target = sharpness(cv2.cvtColor(eyes, cv2.COLOR_RGB2GRAY))
    tex, alpha = _warped(face.landmarks, wearing, PLACEMENTS["mask"], region)
    core = cv2.boundingRect((alpha[:, :, 0] > 0.95).astype(np.uint8))
    if core[2] < 6 or core[3] < 6:
        return wearing
    gray = cv2.cvtColor(tex.astype(np.uint8), cv2.COLOR_RGB2GRAY)
    for sigma in BLURS:  # the least blur that brings the mask down to the face's sharpness
        patch = cv2.GaussianBlur(gray, (0, 0), sigma) if sigma else gray
        x, y, w, h = core
        if sharpness(patch[y:y + h, x:x + w]) <= target + 0.1:
            break
    return wearing._replace(blur=float(sigma))


def wear(rgb, face, wearing, placement, region):
    """``rgb[region]`` (x1, y1, x2, y2 ints) with the texture worn as ``placement`` says."""
    x1, y1, x2, y2 = region
    out = rgb[y1:y2, x1:x2].astype(np.float32)
    tex, alpha = _warped(face.landmarks, wearing, placement, region)
    tex = np.clip(tex * wearing.gain, 0, 255)
    return np.round(alpha * tex + (1 - alpha) * out).astype(np.uint8)
