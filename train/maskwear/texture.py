"""Mask textures: the mask region of a real masked face, cut into the canonical frame.

A masked face is warped into the frame by a similarity on its five landmarks (under a
mask the nose and mouth landmarks are the detector's guesses, so a rigid fit that averages
them is safer than an affine that follows them), and the mask outline (``frame``) is cut
out with a feathered alpha. Where a tight photo ends above the chin, the alpha ends there
too: such a texture leaves the target's chin bare, as many real masks do.

Cuts that are not a clean mask are refused by reason:
- ``texture_turned_face``: a head turned aside shows the background or hair beside
  the mask inside the frontal outline;
- ``texture_outside_image``: the photo ends above the mouth line, or a large part of
  the outline is outside it;
- ``texture_sides_unlike_centre``: both sides of the cut differ in colour from its centre
  (background or hair on both sides). Where only one side does, it is replaced by the
  mirror image of the other (``Texture.mirrored``), masks being nearly symmetric;
- ``texture_skin_coloured``: much of the cut, or of its top band over the nose, has
  the colour of the same face's bare skin: a bare face labelled masked, a mask worn
  low, a hand over the mask, or a skin-coloured mask that would read as skin once pasted.
"""
import collections

import cv2
import numpy as np

from . import frame
from .landmarks import Skip, turn

Texture = collections.namedtuple("Texture", "id rgba origin skin eye_dist source mirrored image")
# rgba: uint8 HxWx4 frame image of the outline's bounding box; origin: its top-left corner
# in units; skin: median RGB of the face's bare skin (its tone and the scene's light);
# eye_dist: eye distance in the source photo, px (its resolution); source: where it was cut;
# mirrored: "left"/"right" when that side was replaced by the other's mirror image, else "";
# image: the photo it was cut from.

# Outline bounding box, plus a little room for the feather.
CUT_X1, CUT_Y1, CUT_X2, CUT_Y2 = 14.0, frame.MASK_TOP - 2, 98.0, 126.0
TOP_BAND = (36.0, frame.MASK_TOP + 1, 76.0, frame.MASK_TOP + 9)  # over the nose bridge
MAX_TURN = 0.2  # eye distances of nose offset (landmarks.turn): about 25 degrees of yaw
# A pixel reads as skin within this Lab distance of the face's own skin, lightness counted
# at 0.3: shading moves skin's lightness far more than its colour (its a and b).
SKIN_DISTANCE, SKIN_LIGHTNESS_WEIGHT = 12.0, 0.3
MAX_SKIN = 0.3  # share of the cut
MAX_SKIN_TOP = 0.35  # share of the top band
# Side bands and the centre (units) whose colours must agree: a side unlike the centre is
# background, hair, a hand or a strap beside a turned head's mask.
SIDE_BANDS = ((20.0, 72.0, 30.0, 104.0), (82.0, 72.0, 92.0, 104.0))
CENTRE_BAND = (46.0, 72.0, 66.0, 104.0)
SIDE_DIFFERS = 18.0  # Lab distance, lightness at half weight (a mask's sides are shaded)
MAX_MISSING = 0.15  # share of the outline that may lie below the photo's edge
LOWEST_EDGE = frame.MOUTH_Y + 6  # the photo must reach below the lower lip


def skin_share(lab, skin_lab, weight):
    """Weighted share of pixels within ``SKIN_DISTANCE`` of ``skin_lab`` (Lab, float32)."""
    d = (lab - skin_lab) * np.array([SKIN_LIGHTNESS_WEIGHT, 1.0, 1.0], np.float32)
    near = np.linalg.norm(d, axis=-1) < SKIN_DISTANCE
    total = weight.sum()
    return float((near * weight).sum() / total) if total > 0 else 1.0


def to_lab(rgb):
    """uint8 or float RGB -> float32 CIE Lab with L in 0..100."""
    return cv2.cvtColor(np.clip(rgb, 0, 255).astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def _band(rect, size):
    """A 0/1 float32 map of ``rect`` (units) in the cut's pixels."""
    band = np.zeros((size[1], size[0]), np.float32)
    x1, y1, x2, y2 = [int(round((v - o) * frame.SCALE))
                      for v, o in zip(rect, (CUT_X1, CUT_Y1, CUT_X1, CUT_Y1))]
    band[max(0, y1):y2, max(0, x1):x2] = 1.0
    return band


def _median_lab(lab, weight):
    pixels = lab[weight > 0.5]
    return np.median(pixels, axis=0) if len(pixels) else None


def mend_sides(cut, alpha):
    """Check the cut's sides against its centre: returns (cut, "" / "left" / "right" for the
    side replaced by the other's mirror image), or raises ``Skip`` when both differ."""
    lab = to_lab(cut)
    size = (cut.shape[1], cut.shape[0])
    centre = _median_lab(lab, alpha * _band(CENTRE_BAND, size))
    weight = np.array([0.5, 1.0, 1.0], np.float32)
    dist = []
    for band in SIDE_BANDS:
        side = _median_lab(lab, alpha * _band(band, size))
        dist.append(np.inf if side is None or centre is None else float(np.linalg.norm((side - centre) * weight)))
    left, right = dist
    half = cut.shape[1] // 2  # the cut is symmetric about the face's midline
    if left > SIDE_DIFFERS and right > SIDE_DIFFERS:
        raise Skip("texture_sides_unlike_centre")
    if left > SIDE_DIFFERS and right <= SIDE_DIFFERS:
        cut = cut.copy()
        cut[:, :half] = cut[:, cut.shape[1] - half:][:, ::-1]
        return cut, "left"
    if right > SIDE_DIFFERS and left <= SIDE_DIFFERS:
        cut = cut.copy()
        cut[:, cut.shape[1] - half:] = cut[:, :half][:, ::-1]
        return cut, "right"
    return cut, ""


def cut_texture(rgb, face, texture_id, source="", image=""):
    """The mask texture of ``face`` (a ``landmarks.Face``) in ``rgb``, or raise ``Skip``;
    ``source`` and ``image`` (the data set and photo) are recorded in it."""
    if abs(turn(face.landmarks)) > MAX_TURN:
        raise Skip("texture_turned_face")
    # source pixels -> units (similarity on the landmarks) -> pixels of the cut
    to_units = frame.similarity(face.landmarks, frame.TEMPLATE)
    units_to_cut = frame.units_to_pixels(frame.SCALE, (CUT_X1, CUT_Y1))
    to_cut = frame.compose(units_to_cut, to_units)
    size = (int((CUT_X2 - CUT_X1) * frame.SCALE), int((CUT_Y2 - CUT_Y1) * frame.SCALE))
    cut = frame.warp(rgb, to_cut, size, border=127)
    inside = frame.warp(np.full(rgb.shape[:2], 255, np.uint8), to_cut, size, border=0) > 127
    feather = frame.FEATHER * frame.SCALE
    outline = frame.outline_alpha(frame.MASK_OUTLINE, units_to_cut, size, 0)
    missing = (outline > 0.5) & ~inside
    if missing.sum() > MAX_MISSING * (outline > 0.5).sum() or missing[:int((LOWEST_EDGE - CUT_Y1) * frame.SCALE)].any():
        raise Skip("texture_outside_image")
    # The outline, cut where the photo ends, then feathered inward as a whole.
    hard = np.round(outline * inside * 255).astype(np.uint8)
    r = int(np.ceil(feather))
    hard = cv2.erode(hard, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    alpha = cv2.GaussianBlur(hard, (0, 0), feather / 2.0).astype(np.float32) / 255.0
    skin = frame.region_median(rgb, frame.invert(to_units), frame.SKIN_PATCHES)
    if skin is None:
        raise Skip("texture_outside_image")
    cut, mirrored = mend_sides(cut, alpha)
    lab, skin_lab = to_lab(cut), to_lab(skin[None, None])[0, 0]
    if (skin_share(lab, skin_lab, alpha) > MAX_SKIN
            or skin_share(lab, skin_lab, alpha * _band(TOP_BAND, size)) > MAX_SKIN_TOP):
        raise Skip("texture_skin_coloured")
    eye_dist = float(np.linalg.norm(face.landmarks[1] - face.landmarks[0]))
    rgba = np.dstack([cut, np.round(alpha * 255).astype(np.uint8)])
    return Texture(texture_id, rgba, (CUT_X1, CUT_Y1), skin, eye_dist, source, mirrored, image)


def flipped(texture):
    """The texture mirrored about the face's vertical midline (x = 56 units)."""
    width_units = texture.rgba.shape[1] / frame.SCALE
    # The cut spans CUT_X1..CUT_X1 + width; mirrored about 56 it starts at 112 - that end.
    origin = (frame.WIDTH - texture.origin[0] - width_units, texture.origin[1])
    return texture._replace(rgba=np.ascontiguousarray(texture.rgba[:, ::-1]), origin=origin)
