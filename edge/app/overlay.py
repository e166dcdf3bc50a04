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


def _overlaps(rects, others):
    """Area each of ``rects`` (k x 4, x1 y1 x2 y2) shares with each of ``others``: k x m."""
    rects = rects[:, None, :]
    others = others[None, :, :]
    width = np.minimum(rects[..., 2], others[..., 2]) - np.maximum(rects[..., 0], others[..., 0])
    height = np.minimum(rects[..., 3], others[..., 3]) - np.maximum(rects[..., 1], others[..., 1])
    return np.maximum(width, 0) * np.maximum(height, 0)


def place_label(size, box, width, height, taken=(), avoid=()):
    """Where a label of ``size`` (w, h) goes beside ``box``: its (x1, y1, x2, y2).

    Tried in order: above the box from its left edge, above it to its right edge, then
    the same two below it. The first that stays in the image and covers no other label
    (``taken``) and no other face (``avoid``) wins; in a crowd where none is free, the
    one that covers least (labels count double: a hidden label is lost, a covered face
    still has its box).
    """
    tw, th = size
    x1, y1, x2, y2 = box
    candidates = []
    for top in (y1 - th, y2):
        for left in (x1, x2 - tw):
            left = min(max(0, left), max(0, width - tw))
            top = min(max(0, top), max(0, height - th))
            candidates.append((left, top, left + tw, top + th))
    # One pass over everything to keep off: the labels (weight 2), the faces, this face.
    others = np.concatenate([np.asarray(taken, np.float32).reshape(-1, 4),
                             np.asarray(avoid, np.float32).reshape(-1, 4),
                             np.asarray([box], np.float32)])
    weights = np.ones(len(others), np.float32)
    weights[:len(taken)] = 2
    cost = _overlaps(np.asarray(candidates, np.float32), others).dot(weights)
    return candidates[int(np.argmin(cost))]


def draw_box(image, box, label):
    """The face's box in its class colour (thicker for faces of 40 px and more)."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = _clip_box(box, w, h)
    thick = 2 if max(x2 - x1, y2 - y1) >= 40 else 1
    cv2.rectangle(image, (x1, y1), (x2, y2), COLOURS.get(label, UNKNOWN), thick)


def label_text(label, score, track=None, compact=False):
    """"#3 mask 97%"; ``compact`` drops the class name, which the colour already says."""
    if label is None:
        text = "?"
    elif compact:
        text = "%d%%" % int(round(100 * score))
    else:
        text = "%s %d%%" % (label, int(round(100 * score)))
    return text if track is None else "#%d %s" % (track, text)


def draw_label(image, box, label, score, track=None, taken=None, avoid=()):
    """"label 97%" (and the track id) on a band of the class colour beside the box.

    A face less than half as wide as its label gets the compact label (no class name),
    so that a crowd of small faces is not buried under text. With a ``taken`` list the
    label moves off the labels already in it and is appended (see ``place_label``).
    """
    h, w = image.shape[:2]
    clipped = _clip_box(box, w, h)
    scale = 0.4
    text = label_text(label, score, track)
    (tw, th), base = cv2.getTextSize(text, FONT, scale, 1)
    if tw > 2 * (clipped[2] - clipped[0]):
        text = label_text(label, score, track, compact=True)
        (tw, th), base = cv2.getTextSize(text, FONT, scale, 1)
    rect = place_label((tw + 2, th + base + 2), clipped, w, h, taken or (), avoid)
    if taken is not None:
        taken.append(rect)
    cv2.rectangle(image, rect[:2], (rect[2] - 1, rect[3] - 1), COLOURS.get(label, UNKNOWN), -1)
    cv2.putText(image, text, (rect[0] + 1, rect[1] + th + 1), FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)


def hud_parts(fps, counts):
    """The status line as (text, colour or None) parts: frames per second, faces, each
    class with its box colour (the legend), and compliance.

    ``fps`` None (a still photo) leaves the frame rate out rather than show "FPS 0.0".
    """
    ratio = compliance(counts)
    parts = [] if fps is None else [("FPS %.1f" % fps, None)]
    parts.append(("faces %d" % sum(counts.values()), None))
    parts.extend(("%s %d" % (label, counts.get(label, 0)), COLOURS[label])
                 for label in ("mask", "no_mask", "incorrect"))
    parts.append(("compliance %s" % ("-" if ratio is None else "%d%%" % int(round(100 * ratio))), None))
    return parts


def _part_width(part, scale):
    """Pixels one HUD part takes at ``scale``: its text, and a swatch before a class's count."""
    text, colour = part
    width, height = cv2.getTextSize(text, FONT, scale, 1)[0]
    return width + (height + 4 if colour else 0)


def _gap(scale):
    """Pixels between two HUD parts at ``scale``."""
    return cv2.getTextSize("  ", FONT, scale, 1)[0][0]


def _line_width(parts, scale):
    """Pixels ``parts`` take on one line at ``scale``, a gap between each two."""
    return sum(_part_width(p, scale) for p in parts) + _gap(scale) * (len(parts) - 1)


def _hud_lines(parts, scale, room):
    """``parts`` in lines of at most ``room`` pixels (a part wider than that alone on its line)."""
    gap = _gap(scale)
    lines, width = [[]], 0  # width: the last line's so far, each part measured once (every frame)
    for part in parts:
        needed = _part_width(part, scale)
        if lines[-1] and width + gap + needed > room:
            lines.append([])
            width = 0
        width += needed + (gap if lines[-1] else 0)
        lines[-1].append(part)
    return lines


def draw_hud(image, fps, counts):
    """The status line (``hud_parts``) top left on a darkened band; returns the band's rect.

    White text, a square of the class colour before each class's count; the text shrinks
    to fit a narrow image (down to a still legible size), then wraps onto more lines.
    """
    parts = hud_parts(fps, counts)
    room = image.shape[1] - 12
    scale = max(0.45, image.shape[1] / 1600.0)
    width = _line_width(parts, scale)
    if width > room:
        scale = max(0.3, scale * room / float(width))
    lines = _hud_lines(parts, scale, room)
    (gap, th), base = cv2.getTextSize("  ", FONT, scale, 1)
    line_height = th + base + 4
    widest = max(_line_width(line, scale) for line in lines)
    # A dark band behind the text keeps it readable on any scene.
    band = image[0:line_height * len(lines) + 4, 0:min(image.shape[1], widest + 12)]
    band[:] = (band * 0.35).astype(np.uint8)
    for row, line in enumerate(lines):
        x, y = 6, th + 4 + row * line_height
        for text, colour in line:
            if colour:
                cv2.rectangle(image, (x, y - th), (x + th, y), colour, -1)
                x += th + 4
            cv2.putText(image, text, (x, y), FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)
            x += cv2.getTextSize(text, FONT, scale, 1)[0][0] + gap
    return 0, 0, band.shape[1], band.shape[0]


def draw_labels(image, faces, taken=None):
    """Every face's label, each placed off the labels before it (and whatever ``taken``
    holds, such as the HUD) and off the other faces; returns all the label rectangles."""
    h, w = image.shape[:2]
    taken = [] if taken is None else taken
    clipped = np.array([_clip_box(face.box, w, h) for face in faces], np.float32).reshape(-1, 4)
    for i, face in enumerate(faces):
        draw_label(image, face.box, face.label, face.score, face.track, taken,
                   np.delete(clipped, i, axis=0))
    return taken


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
            draw_box(image, face.box, face.label)
        # Labels after the boxes and the HUD, so that they can keep off both.
        hud = draw_hud(image, fps, counts if counts is not None else {})
        draw_labels(image, faces, [hud])
    return image
