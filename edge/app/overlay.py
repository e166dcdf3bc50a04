"""Drawing on the output frame: a box per face coloured by class, and a HUD line.

Colours are BGR (OpenCV's order). The optional blur pixelates each face first, so that
no identifiable face leaves the device even when the output is streamed.
"""
import cv2
import numpy as np

from edge.infer.faces import compliance

COLOURS = {
    "mask": (0, 200, 0),        # green
    "no_mask": (0, 0, 230),     # red
    "incorrect": (0, 150, 255),  # orange
}
UNKNOWN = (200, 200, 200)       # a face not classified yet
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _clip_box(box, width, height):
    x1, y1, x2, y2 = [int(round(float(v))) for v in box]
    return max(0, x1), max(0, y1), min(width, x2), min(height, y2)


def blur_faces(image, boxes, cells=6):
    """Pixelate each box in place to ``cells`` x ``cells`` blocks (irreversible, cheap)."""
    h, w = image.shape[:2]
    for box in boxes:
        x1, y1, x2, y2 = _clip_box(box, w, h)
        if x2 - x1 < 2 or y2 - y1 < 2:
            continue
        face = image[y1:y2, x1:x2]
        small = cv2.resize(face, (min(cells, x2 - x1), min(cells, y2 - y1)),
                           interpolation=cv2.INTER_AREA)
        image[y1:y2, x1:x2] = cv2.resize(small, (x2 - x1, y2 - y1),
                                         interpolation=cv2.INTER_NEAREST)
    return image


def draw_face(image, box, label, score, track=None):
    """A box coloured by ``label`` with "label 97%" (and the track id) above it."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = _clip_box(box, w, h)
    colour = COLOURS.get(label, UNKNOWN)
    thick = 2 if max(x2 - x1, y2 - y1) >= 40 else 1
    cv2.rectangle(image, (x1, y1), (x2, y2), colour, thick)
    text = "?" if label is None else "%s %d%%" % (label, int(round(100 * score)))
    if track is not None:
        text = "#%d %s" % (track, text)
    scale = 0.4
    (tw, th), base = cv2.getTextSize(text, FONT, scale, 1)
    ty = y1 - 2 if y1 - th - base - 2 >= 0 else min(h - 1, y2 + th + 2)
    cv2.rectangle(image, (x1, ty - th - base), (x1 + tw + 2, ty + base - 1), colour, -1)
    cv2.putText(image, text, (x1 + 1, ty - 1), FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)


def draw_hud(image, fps, counts):
    """The status line: frames per second, faces, per-class counts and compliance."""
    ratio = compliance(counts)
    text = "FPS %.1f  faces %d  mask %d  no_mask %d  incorrect %d  compliance %s" % (
        fps or 0.0, sum(counts.values()), counts.get("mask", 0), counts.get("no_mask", 0),
        counts.get("incorrect", 0), "-" if ratio is None else "%d%%" % int(round(100 * ratio)))
    scale = max(0.45, image.shape[1] / 1600.0)
    (tw, th), base = cv2.getTextSize(text, FONT, scale, 1)
    # A dark band behind the text keeps it readable on any scene.
    band = image[0:th + base + 8, 0:min(image.shape[1], tw + 12)]
    band[:] = (band * 0.35).astype(np.uint8)
    cv2.putText(image, text, (6, th + 4), FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)


def draw(image, faces, fps=None, counts=None, blur=False, boxes=True):
    """Draw every face (objects with box/label/score/track) and the HUD on ``image``.

    Returns the image drawn on: ``image`` itself, or a copy when it is read-only
    (a frame mapped straight from a GStreamer buffer).
    """
    if not image.flags.writeable:
        image = image.copy()
    if blur:
        blur_faces(image, [f.box for f in faces])
    if boxes:
        for face in faces:
            draw_face(image, face.box, face.label, face.score, face.track)
        draw_hud(image, fps, counts if counts is not None else {})
    return image
