"""Ground truth for ``edge.measure.evaluate``: PASCAL VOC scene sets and per-frame video truth.

Two layouts:

- a VOC scene set: ``images/`` + ``annotations/*.xml`` (one ``<object>`` per face with
  ``<name>`` and ``<bndbox>``), optionally ``splits.csv`` (columns ``image``, ``split``)
  to pick the ``train``/``val``/``test`` scenes;
- a video with a JSON of per-frame truth (``../shared/data/videos/*.json``): ``{"video":
  FILE, "size": [W, H], "frames": [{"frame": i, "objects": [{"label", "box"}]}]}``,
  boxes xyxy in video pixels.

Class names are mapped to the product's labels by ``CLASS_SYNONYMS``, the one list of them
(training reads its data through this module too).
"""
import csv
import json
import os
import xml.etree.ElementTree as ET

import numpy as np

from edge.common import IMAGE_EXTENSIONS
from edge.errors import ConfigError

CLASS_SYNONYMS = {
    "with_mask": "mask", "mask": "mask", "compliant": "mask",
    "without_mask": "no_mask", "no_mask": "no_mask", "nomask": "no_mask", "non-compliant": "no_mask",
    "mask_weared_incorrect": "incorrect", "with_incorrect_mask": "incorrect", "incorrect": "incorrect",
}


class Truth(object):
    """The faces annotated in one image or frame: ``boxes`` float32 Nx4 xyxy, ``labels``."""

    __slots__ = ("key", "path", "boxes", "labels")

    def __init__(self, key, path, boxes, labels):
        self.key, self.path, self.labels = key, path, list(labels)
        self.boxes = np.asarray(boxes, np.float32).reshape(-1, 4)

    def __repr__(self):
        return "<Truth %s: %d faces>" % (self.key, len(self.labels))


def canonical(name, where):
    """The product label of an annotation class name, or ConfigError naming the file."""
    key = str(name).strip().lower()
    if key not in CLASS_SYNONYMS:
        raise ConfigError("%s: unknown class %r; accepted: %s"
                          % (where, name, ", ".join(sorted(CLASS_SYNONYMS))))
    return CLASS_SYNONYMS[key]


def read_voc_file(path):
    """(image file name, boxes, labels) of one VOC annotation file."""
    try:
        root = ET.parse(path).getroot()
    except (IOError, OSError) as exc:
        raise ConfigError("cannot read annotation %s: %s" % (path, exc))
    except ET.ParseError as exc:
        raise ConfigError("annotation %s is not valid XML: %s" % (path, exc))
    filename = (root.findtext("filename") or "").strip()
    boxes, labels = [], []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        if box is None:
            raise ConfigError("annotation %s: an <object> has no <bndbox>" % path)
        try:
            # VOC pixel coordinates are 1-based inclusive in theory; this data (and most
            # converters) write 0-based corners, so they are taken as they are.
            boxes.append([float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
        except (TypeError, ValueError):
            raise ConfigError("annotation %s: a <bndbox> lacks a numeric xmin/ymin/xmax/ymax" % path)
        labels.append(canonical(obj.findtext("name"), path))
    return filename, boxes, labels


def read_splits(root):
    """{image file name: split} from ``root/splits.csv``; {} when there is none."""
    path = os.path.join(root, "splits.csv")
    if not os.path.isfile(path):
        return {}
    with open(path) as stream:
        rows = list(csv.DictReader(stream))
    if rows and not {"image", "split"} <= set(rows[0]):
        raise ConfigError("%s needs the columns image and split" % path)
    return dict((r["image"], r["split"]) for r in rows)


def read_voc(root, split=None):
    """Every annotated image of a VOC scene set, sorted by name: a list of ``Truth``.

    ``split``: keep only the scenes that ``splits.csv`` puts in it (ConfigError when the
    set has no splits.csv or no scene in that split).
    """
    images, notes = os.path.join(root, "images"), os.path.join(root, "annotations")
    if not os.path.isdir(notes):
        raise ConfigError("%s is not a VOC scene set: it has no annotations/ folder" % root)
    splits = read_splits(root) if split else {}
    if split and not splits:
        raise ConfigError("--split %s: %s has no splits.csv" % (split, root))
    scenes = []
    for name in sorted(os.listdir(notes)):
        if not name.lower().endswith(".xml"):
            continue
        filename, boxes, labels = read_voc_file(os.path.join(notes, name))
        path = _image_for(images, filename, name)
        if split and splits.get(os.path.basename(path)) != split:
            continue
        scenes.append(Truth(os.path.basename(path), path, boxes, labels))
    if not scenes:
        known = sorted(set(splits.values()))
        raise ConfigError("%s: no annotated scene%s%s" % (
            root, " in split %r" % split if split else "",
            " (splits: %s)" % ", ".join(known) if split and known else ""))
    return scenes


def _image_for(images, filename, xml_name):
    """The image of an annotation: its <filename>, else the XML's stem with an image extension.

    The converted kaggle853 set says ``.jpg`` where the original said ``.png``: the stem is
    what is trusted when the named file is absent.
    """
    candidates = [filename] if filename else []
    stem = os.path.splitext(filename or xml_name)[0]
    candidates += [stem + ext for ext in IMAGE_EXTENSIONS]
    candidates += [os.path.splitext(xml_name)[0] + ext for ext in IMAGE_EXTENSIONS]
    for candidate in candidates:
        path = os.path.join(images, candidate)
        if os.path.isfile(path):
            return path
    raise ConfigError("annotation %s: its image %s is not in %s"
                      % (xml_name, filename or stem + ".*", images))


def read_video_truth(path):
    """(video path, {frame index: Truth}, (width, height)) from a per-frame truth JSON.

    The video is the JSON's ``video`` entry, relative to the JSON's folder.
    """
    try:
        with open(path) as stream:
            data = json.load(stream)
    except (IOError, OSError) as exc:
        raise ConfigError("cannot read video truth %s: %s" % (path, exc))
    except ValueError as exc:
        raise ConfigError("video truth %s is not valid JSON: %s" % (path, exc))
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list):
        raise ConfigError("video truth %s needs a 'frames' list" % path)
    video = data.get("video")
    if video and not os.path.isabs(video):
        video = os.path.join(os.path.dirname(os.path.abspath(path)), video)
    frames = {}
    for entry in data["frames"]:
        try:
            index = int(entry["frame"])
            objects = entry.get("objects", [])
            boxes = [[float(v) for v in o["box"]] for o in objects]
            labels = [canonical(o["label"], "%s frame %d" % (path, index)) for o in objects]
        except (KeyError, TypeError, ValueError):
            raise ConfigError("video truth %s: frame entry %r needs 'frame' and 'objects' with "
                              "'label' and a 4-number 'box'" % (path, entry if len(str(entry)) < 200
                                                               else str(entry)[:200] + "..."))
        if any(len(b) != 4 for b in boxes):
            raise ConfigError("video truth %s frame %d: a box is not 4 numbers (xyxy)" % (path, index))
        frames[index] = Truth(entry.get("scene", "frame %d" % index), video, boxes, labels)
    size = tuple(data["size"]) if data.get("size") else None
    return video, frames, size


def read_ignore_regions(path):
    """{image file name: float32 Nx4 xyxy boxes} from a CSV of regions not to score.

    Such a region is a face the annotators left out, or one nobody can label: a detection
    there is neither a hit nor a false positive (``edge.measure.metrics.unscored``).
    """
    regions = {}
    for row, box in read_ignore_rows(path):
        regions.setdefault(row["image"], []).append(box)
    return dict((name, np.asarray(boxes, np.float32)) for name, boxes in regions.items())


def read_ignore_rows(path):
    """[(row dict, [x1, y1, x2, y2])] of an ignore-regions CSV, checked.

    Columns ``image``, ``x1``, ``y1``, ``x2``, ``y2`` (pixels of the scene image; other
    columns, such as a split, a verdict or a note, are kept in the row for people).
    """
    try:
        with open(path) as stream:
            rows = list(csv.DictReader(stream))
    except (IOError, OSError) as exc:
        raise ConfigError("cannot read ignore regions %s: %s" % (path, exc))
    needed = ("image", "x1", "y1", "x2", "y2")
    if rows and not set(needed) <= set(rows[0]):
        raise ConfigError("ignore regions %s need the columns %s" % (path, ", ".join(needed)))
    checked = []
    for line, row in enumerate(rows, 2):  # line 1 is the header
        try:
            box = [float(row[k]) for k in needed[1:]]
        except (TypeError, ValueError):
            raise ConfigError("ignore regions %s line %d: x1, y1, x2, y2 must be numbers" % (path, line))
        if box[2] <= box[0] or box[3] <= box[1]:
            raise ConfigError("ignore regions %s line %d: the box %s is empty (need x2 > x1, y2 > y1)"
                              % (path, line, box))
        checked.append((row, box))
    return checked


def find_video_truth(path):
    """The truth JSON of a video: ``path`` itself when it is a .json, else ``STEM.json`` beside it."""
    if path.lower().endswith(".json"):
        return path
    candidate = os.path.splitext(path)[0] + ".json"
    if not os.path.isfile(candidate):
        raise ConfigError("%s has no per-frame truth: expected %s (see edge/measure/truth.py for the format)"
                          % (path, candidate))
    return candidate
