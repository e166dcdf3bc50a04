"""Hard cases drawn on training crops: what makes a face look masked, or hides how it is worn.

The shipped two-class model called faces masked when something else covered the lower face
(a hand, a phone, a sheet of paper), when sunglasses hid the eyes, and on blurred faces.
These draw such things on a letterboxed face crop (uint8 RGB, the face centred with the
crop margin around it) and keep its label: an object before the mouth is not a mask.

Positions are fractions of the crop, taken from where kaggle853's face boxes put the eyes
and the mouth after the 0.15 margin (eyes near 40 % of the height, mouth near 70 %).
"""
import cv2
import numpy as np

SKIN = ((224, 172, 138), (198, 134, 66), (141, 85, 36), (255, 219, 172), (110, 68, 40))


def _rgb(rng, palette):
    base = np.array(palette[rng.integers(len(palette))], np.float32)
    return tuple(int(v) for v in np.clip(base * rng.uniform(0.8, 1.15), 0, 255))


def occluder(crop, rng):
    """A hand, a phone or a sheet of paper before the mouth, at a slant; the rest of the face shows."""
    out = crop.copy()
    h, w = out.shape[:2]
    kind = rng.integers(3)
    cx, cy = w * rng.uniform(0.35, 0.65), h * rng.uniform(0.62, 0.8)
    angle = rng.uniform(-35, 35)
    if kind == 0:  # a hand: a skin-coloured palm with finger bands
        colour = _rgb(rng, SKIN)
        size = (w * rng.uniform(0.22, 0.32), h * rng.uniform(0.14, 0.22))
        cv2.ellipse(out, (int(cx), int(cy)), (int(size[0]), int(size[1])), angle, 0, 360, colour, -1)
        for k in range(4):
            fx = cx - size[0] + (k + 0.5) * size[0] / 2.0
            cv2.line(out, (int(fx), int(cy)), (int(fx + rng.uniform(-3, 3)), int(cy - size[1] * 1.6)),
                     colour, max(1, int(w * 0.05)))
    else:  # a phone (dark, glossy) or a sheet of paper (light), as a rotated rectangle
        if kind == 1:
            colour, size = _rgb(rng, ((25, 25, 30), (60, 60, 70), (200, 200, 210))), (w * 0.16, h * 0.3)
        else:
            colour, size = _rgb(rng, ((245, 245, 240), (230, 225, 200), (250, 240, 160))), (w * 0.3, h * 0.24)
        box = cv2.boxPoints(((cx, cy), (size[0] * rng.uniform(0.8, 1.2), size[1] * rng.uniform(0.8, 1.2)), angle))
        cv2.fillPoly(out, [np.int32(box)], colour)
    return out


def sunglasses(crop, rng):
    """Two dark lenses and a bridge over the eyes."""
    out = crop.copy()
    h, w = out.shape[:2]
    y = int(h * rng.uniform(0.34, 0.44))
    gap, radius = w * rng.uniform(0.15, 0.19), (int(w * rng.uniform(0.1, 0.14)), int(h * rng.uniform(0.06, 0.09)))
    cx = w * rng.uniform(0.46, 0.54)
    colour = _rgb(rng, ((15, 15, 15), (40, 30, 20), (20, 30, 45)))
    for side in (-1, 1):
        cv2.ellipse(out, (int(cx + side * gap), y), radius, 0, 0, 360, colour, -1)
    cv2.line(out, (int(cx - gap + radius[0]), y), (int(cx + gap - radius[0]), y), colour, max(1, int(w * 0.02)))
    return out


def blur(crop, rng):
    """Defocus (a Gaussian) or motion blur (a line kernel), up to about a tenth of the crop."""
    w = crop.shape[1]
    size = int(rng.integers(1, max(2, w // 20))) * 2 + 1
    if rng.random() < 0.5:
        return cv2.GaussianBlur(crop, (size, size), 0)
    kernel = np.zeros((size, size), np.float32)
    kernel[size // 2, :] = 1.0 / size
    rot = cv2.getRotationMatrix2D((size / 2.0 - 0.5, size / 2.0 - 0.5), rng.uniform(0, 180), 1.0)
    kernel = cv2.warpAffine(kernel, rot, (size, size))
    return cv2.filter2D(crop, -1, kernel / max(kernel.sum(), 1e-6))


HARD_CASES = (("occluders", occluder), ("sunglasses", sunglasses), ("blur", blur))


def hard_cases(crop, rng, probabilities):
    """Apply each hard case with its probability ({name: p}); the crop itself is not changed."""
    for name, draw in HARD_CASES:
        if probabilities.get(name, 0.0) and rng.random() < probabilities[name]:
            crop = draw(crop, rng)
    return crop
