"""The faces that synthesis may use: train-split faces only, masked ones for textures,
bare ones for targets, with their licences.

Splits are the project's own: ``splits.csv`` for the scene sets, and for the folder set
(fmd) the trainer's hygiene and split (``train.data.clean`` then ``stratified_split`` with
the same split seed), so that no synthesized image carries a face, or a mask, of a
validation or test image. fmd's near-copies (re-encoded, pre-augmented) are kept once.
"""
import collections
import os
import re
import zlib

from train import data

Candidate = collections.namedtuple("Candidate", "id source path box group")
# id: unique, file-name safe; box: xyxy annotation, None for a whole image; group: what
# must stay in one split (the face: its scene and box, or fmd's near-copy group).

SOURCES = collections.OrderedDict([
    ("kaggle853", {"layout": "voc", "licence": "CC0-1.0",
                   "masked": "mask", "bare": "no_mask"}),
    ("fmd", {"layout": "folders", "licence": "MIT",
             "masked": "mask", "bare": "no_mask"}),
    ("moxa3k", {"layout": "voc", "licence": "none stated (research data, web-scraped; "
                                            "a model trained on it must say so)",
                "masked": "mask", "bare": "no_mask"}),
])


def safe(text):
    """``text`` with anything but letters, digits, ``.``, ``_`` and ``-`` replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def unique_ids(faces):
    """``faces`` with every id that occurs more than once (``safe`` can map two file names
    to one) suffixed with a checksum of its path, so that output names never collide."""
    counts = collections.Counter(c.id for c in faces)
    out = []
    for c in faces:
        if counts[c.id] > 1:
            suffix = "-%08x" % zlib.crc32(("%s|%s" % (c.path, c.box)).encode())
            c = c._replace(id=c.id + suffix, group=c.group + suffix if c.group == c.id else c.group)
        out.append(c)
    return out


def scene_faces(root, name, label):
    """Train-split faces of class ``label`` in a VOC scene set; ids number the faces of
    a scene in annotation order (all classes counted), so an id names one face for good."""
    out, index = [], collections.Counter()
    for s in data.load_source(root):
        n = index[s.path]
        index[s.path] += 1
        if s.split == "train" and s.label == label:
            stem = os.path.splitext(os.path.basename(s.path))[0]
            face_id = "%s-%s-f%d" % (name, safe(stem), n)
            out.append(Candidate(face_id, name, s.path, s.box, face_id))
    return unique_ids(out)


def folder_faces(root, name, label, split_seed=0, min_size=8, hygiene=None):
    """Train-split images of class ``label`` in a folder-per-class set, split as the
    trainer splits it (same hygiene, same ``split_seed``), one image per near-copy group."""
    samples = [s for s in data.load_source(root) if s.label in ("mask", "no_mask", "incorrect")]
    samples, _ = data.clean(samples, min_size, hygiene)
    samples = data.stratified_split(samples, seed=split_seed)
    out, seen = [], set()
    for s in samples:
        if s.split != "train" or s.label != label:
            continue
        if s.group in seen:  # a near-copy of an image already listed
            if hygiene is not None:
                hygiene.note("near_copy_used_once", s.path)
            continue
        seen.add(s.group)
        # The extension stays in the id: fmd has 0_0_0.jpg, .jpeg and .png, not all in one split.
        face_id = "%s-%s" % (name, safe(os.path.relpath(s.path, root)))
        group = "%s-%s" % (name, safe(os.path.relpath(s.group, root)))
        out.append(Candidate(face_id, name, s.path, None, group))
    return unique_ids(out)


def candidates(data_root, kind, names=None, split_seed=0, hygiene=None):
    """Faces for ``kind`` ``"masked"`` (textures) or ``"bare"`` (targets) from every
    source present under ``data_root`` (or only ``names``); returns (faces, sources used)."""
    faces, used = [], []
    for name, info in SOURCES.items():
        if names and name not in names:
            continue
        root = os.path.join(data_root, name)
        if not os.path.isdir(root):
            continue
        label = info[kind]
        if info["layout"] == "voc":
            found = scene_faces(root, name, label)
        else:
            found = folder_faces(root, name, label, split_seed, hygiene=hygiene)
        faces.extend(found)
        used.append(name)
    if not faces:
        raise data.DataError("no %s faces found under %s (expected %s)"
                             % (kind, data_root, ", ".join(names or SOURCES)))
    return faces, used
