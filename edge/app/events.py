"""What the service saw: one JSON line per processed frame, and (opt-in) face crops.

A line looks like::

    {"time": "2026-11-28T06:00:00.123Z", "frame": 12, "faces": [{"track": 3,
     "box": [412, 220, 450, 266], "label": "mask", "score": 0.97}], "counts":
     {"mask": 1, "no_mask": 0, "incorrect": 0}}

``time`` is ISO 8601 UTC; ``box`` is xyxy in pixels of the input frame; ``counts`` has
every label, zero included, so consumers need no defaults. No face image is written
unless ``save_faces`` is on (the owner's decision, not the default).
"""
import datetime
import io
import json
import logging
import os
import sys

import cv2

from edge.infer.faces import count_labels

log = logging.getLogger(__name__)


def utc_now():
    """The current time as ISO 8601 UTC with milliseconds and a Z."""
    now = datetime.datetime.utcnow()
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (now.microsecond // 1000)


class EventWriter(object):
    """Writes one JSON line per frame to ``path`` ('-' = stdout), flushed every
    ``flush_every`` frames and on ``close``."""

    def __init__(self, path, flush_every=10):
        self.path, self.flush_every = path, max(1, int(flush_every))
        self.lines = 0
        if path == "-":
            self._stream, self._owned = sys.stdout, False
        else:
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder):
                os.makedirs(folder)
            # Line-oriented text; an explicit encoding because the locale may be C on a device.
            self._stream, self._owned = io.open(path, "w", encoding="utf-8"), True

    def write(self, frame, faces, extra=None):
        """Append the record of ``frame`` (int) with its classified ``faces``."""
        labelled = [f for f in faces if f.label is not None]
        record = {"time": utc_now(), "frame": int(frame),
                  "faces": [f.to_dict() for f in labelled], "counts": count_labels(labelled)}
        if extra:
            record.update(extra)
        self._stream.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.lines += 1
        if self.lines % self.flush_every == 0:
            self._stream.flush()

    def flush(self):
        """Push buffered lines to the file."""
        self._stream.flush()

    def close(self):
        """Flush, and close the file (stdout is only flushed)."""
        if self._stream is None:
            return
        self._stream.flush()
        if self._owned:
            self._stream.close()
        self._stream = None


class FaceSaver(object):
    """Stores a crop of a face each time it is classified (only when the owner turns it on)."""

    def __init__(self, folder):
        self.folder = folder
        if not os.path.isdir(folder):
            os.makedirs(folder)
        self.saved = 0

    def save(self, image, face, frame):
        """Write ``face``'s crop from ``image`` as <frame>_<track>_<label>.jpg."""
        h, w = image.shape[:2]
        x1, y1, x2, y2 = [int(round(float(v))) for v in face.box]
        x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
        if x2 <= x1 or y2 <= y1:
            return None
        name = "%06d_%s_%s.jpg" % (frame, face.track if face.track is not None else "x", face.label)
        path = os.path.join(self.folder, name)
        if cv2.imwrite(path, image[y1:y2, x1:x2]):
            self.saved += 1
            return path
        log.warning("could not write face crop %s", path)
        return None
