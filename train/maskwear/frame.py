"""The canonical face frame: five landmark positions, the mask outline, and warps into it.

Coordinates are in template units: the 112 x 112 five-point template of face alignment
(ArcFace's), where the eyes sit at y 51.6, the nose tip at 71.7 and the mouth corners at
92.3; the chin is near y 118. The frame is 112 units wide and 140 tall, so that a mask
pulled down below the chin still fits. Images of the frame are ``SCALE`` pixels per unit.
"""
import cv2
import numpy as np

TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                     [41.5493, 92.3655], [70.7299, 92.2041]], np.float32)
WIDTH, HEIGHT = 112, 140
SCALE = 2.0  # canonical pixels per unit: a 70 px eye distance keeps a mask's weave and folds
MOUTH_Y = 92.3  # the template mouth line (the mean of its corners)
CHIN_Y = 117.0  # the chin's lowest point, typically (a 2/3 lower-face proportion below the mouth)
MASK_TOP = 60.0  # the cut's top edge at the centre: over the nose bridge, below the eyes
# The outline of a worn mask (clockwise from the nose bridge), a little inside the face
# edge so that a cut from a turned head holds little background: across the cheeks below
# the eyes, down the jaw, round the chin (and a little under it: not much, or the cut
# brings the shadow under the chin along).
MASK_OUTLINE = np.array([
    [56, MASK_TOP], [68, 61.5], [79, 64], [89, 67], [93, 78], [93, 92], [90, 104], [84, 112],
    [74, 118.5], [56, 121], [38, 118.5], [28, 112], [22, 104], [19, 92], [19, 78], [23, 67],
    [33, 64], [44, 61.5]], np.float32)
# Skin for a face's own skin colour and light (x1, y1, x2, y2): between the brows, which
# no mask reaches and fringes and caps rarely do; the cheeks under the eyes are covered by
# a mask worn high, the forehead by hair. Callers take a median (a glasses bridge, brows).
SKIN_PATCHES = ((48.0, 40.0, 64.0, 50.0),)
FEATHER = 2.0  # units: the soft edge of a cut (about a pixel on a 40 px face)


def similarity(src, dst):
    """Least-squares similarity (rotation, uniform scale, shift) mapping ``src`` to ``dst``.

    Umeyama's closed form over all points; returns a 2x3 matrix. Used where landmarks are
    guesses (the nose and mouth under a mask), where a full affine would follow their noise.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    u, s, vt = np.linalg.svd(dc.T @ sc / len(src))
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ d @ vt
    scale = np.trace(np.diag(s) @ d) / (sc ** 2).sum(1).mean()
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]]).astype(np.float32)


def affine(src, dst):
    """Least-squares affine map of ``src`` onto ``dst`` (2x3): follows a turned head's
    horizontal foreshortening, which a similarity cannot."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    a = np.hstack([src, np.ones((len(src), 1))])
    sol, _, _, _ = np.linalg.lstsq(a, dst, rcond=None)
    return sol.T.astype(np.float32)


def compose(outer, inner):
    """The 2x3 affine ``outer`` after ``inner``."""
    o = np.vstack([outer, [0, 0, 1]]).astype(np.float64)
    i = np.vstack([inner, [0, 0, 1]]).astype(np.float64)
    return (o @ i)[:2].astype(np.float32)


def invert(m):
    """The inverse of a 2x3 affine."""
    return cv2.invertAffineTransform(np.asarray(m, np.float32))


def units_to_pixels(scale=SCALE, origin=(0.0, 0.0)):
    """The affine from template units to the pixels of a frame image cut at ``origin``."""
    return np.array([[scale, 0, -origin[0] * scale], [0, scale, -origin[1] * scale]], np.float32)


def warp(image, m, size, border=0, interpolation=cv2.INTER_LINEAR):
    """``cv2.warpAffine`` that area-averages when ``m`` shrinks, so textures do not alias.

    ``size`` is (width, height); a strong reduction is done first by ``cv2.resize`` with
    area averaging, and the rest of ``m`` by the warp.
    """
    m = np.asarray(m, np.float32)
    shrink = float(np.sqrt(abs(np.linalg.det(m[:, :2].astype(np.float64)))))
    if shrink < 0.7:
        h, w = image.shape[:2]
        small = cv2.resize(image, (max(1, int(round(w * shrink))), max(1, int(round(h * shrink)))),
                           interpolation=cv2.INTER_AREA)
        pre = np.array([[small.shape[1] / float(w), 0, 0], [0, small.shape[0] / float(h), 0]], np.float32)
        image, m = small, compose(m, invert(pre))
    value = border if np.ndim(border) else (border,) * (image.shape[2] if image.ndim == 3 else 1)
    return cv2.warpAffine(image, m, (int(size[0]), int(size[1])), flags=interpolation,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=value)


def outline_alpha(outline, m, size, feather):
    """A float32 alpha (0..1) of ``outline`` (units) drawn through ``m`` at ``size``: 1 inside,
    feathered over ``feather`` pixels inside the edge so that no outside pixel leaks in."""
    pts = cv2.transform(np.asarray(outline, np.float32)[None], m)[0]
    alpha = np.zeros((int(size[1]), int(size[0])), np.uint8)
    cv2.fillPoly(alpha, [np.round(pts * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=4)
    if feather > 0.5:
        r = int(np.ceil(feather))
        alpha = cv2.erode(alpha, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
        alpha = cv2.GaussianBlur(alpha, (0, 0), feather / 2.0)
    return alpha.astype(np.float32) / 255.0


def region_median(rgb, m, rects):
    """Median RGB (float32, 3) of the image under ``rects`` (units; ``m``: units -> image),
    or None when they hold fewer than 4 pixels (a face at the photo's edge)."""
    sel = np.zeros(rgb.shape[:2], np.uint8)
    for x1, y1, x2, y2 in rects:
        corners = cv2.transform(np.array([[[x1, y1], [x2, y1], [x2, y2], [x1, y2]]], np.float32), m)[0]
        cv2.fillPoly(sel, [np.round(corners).astype(np.int32)], 1)
    pixels = rgb[sel > 0]
    if len(pixels) < 4:
        return None
    return np.median(pixels.reshape(-1, 3), axis=0).astype(np.float32)
