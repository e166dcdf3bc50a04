"""A contact sheet of the worst misses: faces the service missed or mislabelled, with boxes.

Each tile is the face with some context around it, the annotated box in the colour of its
true class and, for a mislabelled face, the detection's box in white; the caption says
what went wrong. The largest faces come first: a missed 80-pixel face is a worse failure
than a missed 12-pixel one, and it is the one a user can do something about (camera
placement, detector choice). A face held still over several video frames appears once.
"""
import heapq

import cv2
import numpy as np

from edge.app import overlay

TILE = 128
CAPTION = 30


class MissSheet(object):
    """Keeps the ``keep`` largest missed/mislabelled faces and writes them as one PNG."""

    def __init__(self, keep=48, columns=8):
        self.keep, self.columns = int(keep), int(columns)
        self._heap = []  # (priority, order, tile)
        self._seen = set()
        self._order = 0
        self.total = 0

    def add(self, image, key, index, box, truth, det_box=None, predicted=None, score=None):
        """Record face ``index`` of scene ``key`` (missed when ``det_box`` is None)."""
        if (key, index) in self._seen:
            return
        self._seen.add((key, index))
        self.total += 1
        side = max(float(box[2]) - float(box[0]), float(box[3]) - float(box[1]))
        if len(self._heap) >= self.keep and side <= self._heap[0][0]:
            return
        if det_box is None:
            text = "missed %s %dpx" % (truth, side)
        else:
            text = "%s as %s %.2f" % (truth, predicted or "?", score or 0.0)
        tile = self._tile(image, box, truth, det_box, text)
        self._order += 1
        item = (side, self._order, tile)
        if len(self._heap) < self.keep:
            heapq.heappush(self._heap, item)
        else:
            heapq.heapreplace(self._heap, item)

    def _tile(self, image, box, truth, det_box, text):
        # Two face sizes of context (at least 48 px): enough to see the head and the scene.
        crop, place = context_crop(image, box, 1.0, 24.0, TILE)
        tile = np.zeros((TILE + CAPTION, TILE, 3), np.uint8)
        tile[:crop.shape[0], :crop.shape[1]] = crop
        colour = overlay.COLOURS.get(truth, overlay.UNKNOWN)
        p = place(box)
        cv2.rectangle(tile, p[:2], p[2:], colour, 2)
        if det_box is not None:
            q = place(det_box)
            cv2.rectangle(tile, q[:2], q[2:], (255, 255, 255), 1)
        for row, part in enumerate(_wrap(text, 15)[:2]):
            cv2.putText(tile, part, (3, TILE + 12 + 13 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.38,
                        (255, 255, 255), 1, cv2.LINE_AA)
        return tile

    def write(self, path, title=""):
        """Write the sheet (largest faces first) to ``path``; returns the path."""
        tiles = [t for _, _, t in sorted(self._heap, key=lambda item: (-item[0], item[1]))]
        columns = max(1, min(self.columns, len(tiles)))
        rows = max(1, -(-len(tiles) // columns))
        header = 24
        sheet = np.full((header + rows * (TILE + CAPTION), columns * TILE, 3), 32, np.uint8)
        note = "%s: %d missed/mislabelled faces, %d largest shown" % (title, self.total, len(tiles))
        cv2.putText(sheet, note if tiles else "%s: no missed face" % title, (4, 16),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
        for i, tile in enumerate(tiles):
            r, c = divmod(i, columns)
            y = header + r * (TILE + CAPTION)
            sheet[y:y + TILE + CAPTION, c * TILE:(c + 1) * TILE] = tile
        if not cv2.imwrite(path, sheet):
            raise IOError("cannot write the misses sheet to %s" % path)
        return path


def context_crop(image, box, context, min_half, size):
    """The region around ``box`` (half-side ``context`` x its longest side, at least
    ``min_half`` px), clipped to the image and scaled so that its longest side is ``size``:
    (crop, place), where ``place(box)`` maps image coordinates into the crop."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = [float(v) for v in box]
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = max(max(x2 - x1, y2 - y1) * context, min_half)
    left, top = int(max(0, cx - half)), int(max(0, cy - half))
    right, bottom = int(min(w, cx + half)), int(min(h, cy + half))
    crop = image[top:bottom, left:right]
    if crop.size == 0:
        crop = np.zeros((8, 8, 3), np.uint8)
    scale = float(size) / max(crop.shape[:2])
    crop = cv2.resize(crop, (max(1, int(crop.shape[1] * scale)), max(1, int(crop.shape[0] * scale))),
                      interpolation=cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA)

    def place(b):
        return tuple(int(round((v - o) * scale)) for v, o in zip(b, (left, top, left, top)))

    return crop, place


def _wrap(text, width):
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = (line + " " + word).strip()
    return lines + ([line] if line else [])
