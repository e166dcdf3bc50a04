"""Data readers, hygiene and splits: from folders or annotated scenes to labelled samples.

Three layouts are read (see ``load_source``):
- a folder per class (``with_mask/``, ``without_mask/``...; synonyms in ``CLASS_SYNONYMS``);
- SF-MASK: ``train/`` and ``test/``, each with ``compliant/`` and ``non-compliant/``;
- PASCAL VOC scenes: ``images/`` + ``annotations/*.xml``, face crops cut with a margin,
  honouring ``splits.csv`` (columns ``image,split``) where one exists.

A ``Sample`` is one face: an image path, an optional box in it, a class name, a split and
a group (scene or near-duplicate group: what must never straddle two splits).
"""
import collections
import csv
import hashlib
import json
import os
import random

import numpy as np
from PIL import Image, UnidentifiedImageError

from edge.measure import truth
from edge.measure.truth import CLASS_SYNONYMS
from train.images import dhash, read_rgb

# PIL's format name -> the extensions that honestly name it
FORMAT_EXTENSIONS = {"JPEG": {".jpg", ".jpeg"}, "PNG": {".png"}, "BMP": {".bmp"},
                     "WEBP": {".webp"}, "TIFF": {".tif", ".tiff"}, "GIF": {".gif"}}
SPLITS = ("train", "val", "test")
# What the hygiene pass learnt of each file (decoding a data set takes minutes), by path,
# size and modification time.
HYGIENE_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "maskgate", "hygiene.json")

# weight: how much the sample counts in training (``assign_weights``); 1 unless said otherwise.
Sample = collections.namedtuple("Sample", "path box label split group source weight", defaults=(1.0,))
# A folder data set with this file is synthesized (``python -m train.maskwear``): its rows
# name each image's group (the target face), and it is only ever trained on.
MANIFEST = "manifest.csv"


class DataError(ValueError):
    """The data set cannot be read as asked (unknown class folder, no images...)."""


def canonical_class(name, where):
    """Map a folder or annotation class name to mask / no_mask / incorrect, or raise."""
    key = name.strip().lower()
    if key not in CLASS_SYNONYMS:
        raise DataError("unknown class %r in %s; accepted names: %s"
                        % (name, where, ", ".join(sorted(CLASS_SYNONYMS))))
    return CLASS_SYNONYMS[key]


class Hygiene:
    """Counts of what was excluded, converted or noted, per reason, with a few examples."""

    def __init__(self):
        self.counts = collections.Counter()
        self.examples = collections.defaultdict(list)

    def note(self, reason, path):
        self.counts[reason] += 1
        if len(self.examples[reason]) < 3:
            self.examples[reason].append(os.path.basename(str(path)))

    def summary(self):
        return {reason: {"count": n, "examples": self.examples[reason]} for reason, n in sorted(self.counts.items())}

    def __str__(self):
        if not self.counts:
            return "hygiene: nothing to report"
        return "hygiene: " + ", ".join("%s %d" % kv for kv in sorted(self.counts.items()))


class _Recorder:
    """Collects the hygiene notes of one file, so that they can be cached and replayed."""

    def __init__(self):
        self.notes = []

    def note(self, reason, path):
        self.notes.append(reason)


def inspect_cached(path, hygiene, cache):
    """``inspect_file`` through ``cache`` ({key: [result, notes]}), keyed on the file's path,
    size and modification time: a second run (a study of many runs) skips the decoding."""
    try:
        stat = os.stat(path)
        key = "%s|%d|%d" % (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    except OSError:
        key = None
    if key is None or key not in cache:
        recorder = _Recorder()
        result = inspect_file(path, recorder)
        if key is not None:
            cache[key] = [list(result) if result else None, recorder.notes]
    result, notes = cache[key] if key is not None else (result, recorder.notes)
    for reason in notes:
        hygiene.note(reason, path)
    return tuple(result) if result else None


def inspect_file(path, hygiene):
    """Check one file; return (sha256, width, height, dhash) or None when it must be excluded."""
    try:
        size = os.path.getsize(path)
    except OSError:
        hygiene.note("unreadable", path)
        return None
    if size == 0:
        hygiene.note("empty_file", path)
        return None
    try:
        with Image.open(path) as im:
            fmt = im.format
            rgb = read_rgb(path, hygiene)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        hygiene.note("not_an_image_or_corrupt", path)
        return None
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMAT_EXTENSIONS.get(fmt, {ext}):
        hygiene.note("wrong_extension_%s_is_%s" % (ext or "none", fmt), path)
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return digest, rgb.shape[1], rgb.shape[0], dhash(rgb)


def _load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _save_json(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as f:
        json.dump(value, f)
    os.replace(tmp, path)


def near_duplicate_groups(paths, hashes, max_distance=4):
    """Union-find groups of images whose dHashes differ in at most ``max_distance`` bits."""
    parent = list(range(len(paths)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    values = np.array(hashes, dtype=np.uint64)
    for i in range(len(values)):
        xor = np.bitwise_xor(values[i + 1:], values[i])
        distance = np.unpackbits(xor.view(np.uint8).reshape(-1, 8), axis=1).sum(1)
        for j in np.nonzero(distance <= max_distance)[0]:
            parent[find(i + 1 + j)] = find(i)
    return {paths[i]: paths[find(i)] for i in range(len(paths))}


def _list_files(folder):
    names = sorted(n for n in os.listdir(folder) if not n.startswith("."))
    return [os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))]


def manifest_groups(root):
    """{image path: group} from a synthesized set's ``manifest.csv`` ({} for other sets)."""
    path = os.path.join(root, MANIFEST)
    if not os.path.isfile(path):
        return {}
    with open(path, newline="") as f:
        return {os.path.join(root, row["file"]): row["group"] for row in csv.DictReader(f)}


def is_synthetic(root):
    """Whether ``root`` is a synthesized data set (it has a ``manifest.csv``)."""
    return os.path.isfile(os.path.join(root, MANIFEST))


def read_class_folders(root, split=None, source=None):
    """Samples of a folder-per-class tree (``root/<class>/*``); any file is a candidate.

    A synthesized set's manifest gives each image its group (the face it was made from).
    """
    groups = manifest_groups(root)
    samples = []
    for entry in sorted(os.listdir(root)):
        folder = os.path.join(root, entry)
        if not os.path.isdir(folder) or entry.startswith("."):
            continue
        label = canonical_class(entry, root)
        for path in _list_files(folder):
            samples.append(Sample(path, None, label, split, groups.get(path, path),
                                  source or os.path.basename(os.path.normpath(root))))
    if not samples:
        raise DataError("no class folders with files under %s" % root)
    return samples


def read_voc(root, source=None):
    """Face boxes of a VOC scene set (``edge.measure.truth``'s reader); ``split`` from
    ``root/splits.csv`` when present."""
    splits = truth.read_splits(root)
    samples = []
    for scene in truth.read_voc(root):
        for box, label in zip(scene.boxes, scene.labels):
            samples.append(Sample(scene.path, tuple(float(v) for v in box), label, splits.get(scene.key),
                                  scene.key, source or os.path.basename(os.path.normpath(root))))
    if not samples:
        raise DataError("no annotated faces under %s" % os.path.join(root, "annotations"))
    return samples


def detect_layout(root):
    """``voc``, ``sfmask`` or ``folders``, from what ``root`` contains."""
    if not os.path.isdir(root):
        raise DataError("data folder not found: %s" % root)
    if os.path.isdir(os.path.join(root, "annotations")) and os.path.isdir(os.path.join(root, "images")):
        return "voc"
    subdirs = {d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))}
    if "train" in subdirs and "test" in subdirs:
        return "sfmask"
    return "folders"


def load_source(root):
    """Read any supported layout into samples (split set where the layout fixes it)."""
    layout = detect_layout(root)
    name = os.path.basename(os.path.normpath(root))
    if layout == "voc":
        return read_voc(root, source=name)
    if layout == "sfmask":
        return (read_class_folders(os.path.join(root, "train"), "train", source=name)
                + read_class_folders(os.path.join(root, "test"), "test", source=name))
    return read_class_folders(root, source=name)


def clean(samples, min_size=8, hygiene=None):
    """Apply hygiene: drop undecodable files, exact duplicates and too-small faces.

    Exact duplicates (same bytes) keep the first copy; copies under different classes are
    all dropped (the label is unknowable). Runs before any split, so no copy can leak
    from training into test.
    """
    from tqdm import tqdm
    hygiene = hygiene or Hygiene()
    cache = _load_json(HYGIENE_CACHE)
    by_path = {}
    for path in tqdm(sorted({s.path for s in samples}), desc="checking images", unit="img",
                     leave=False, disable=None):
        by_path[path] = inspect_cached(path, hygiene, cache)
    _save_json(HYGIENE_CACHE, cache)
    labels_by_digest = collections.defaultdict(set)
    for s in samples:
        if by_path[s.path] and s.box is None:
            labels_by_digest[by_path[s.path][0]].add(s.label)
    seen, kept = set(), []
    for s in samples:
        info = by_path[s.path]
        if info is None:
            continue
        digest, width, height, _ = info
        if s.box is None:
            if len(labels_by_digest[digest]) > 1:
                hygiene.note("duplicate_with_conflicting_labels", s.path)
                continue
            if digest in seen:
                hygiene.note("exact_duplicate_removed", s.path)
                continue
            seen.add(digest)
            w, h = width, height
        else:
            w, h = s.box[2] - s.box[0], s.box[3] - s.box[1]
        if max(w, h) < min_size:  # the longest side, as the edge detector measures a face
            hygiene.note("below_min_size_%dpx" % min_size, s.path)
            continue
        kept.append(s)
    # Near-copies (re-encoded, resized, pre-augmented) must not straddle splits: group them.
    whole = sorted({s.path for s in kept if s.box is None})
    if whole:
        groups = near_duplicate_groups(whole, [by_path[p][3] for p in whole])
        for p in whole:
            if groups[p] != p:
                hygiene.note("near_duplicate_grouped", p)
        # A group given by the data set (a synthesized face's target) is kept as it is.
        kept = [s._replace(group=groups[s.path]) if s.box is None and s.group == s.path else s for s in kept]
    return kept, hygiene


def stratified_split(samples, fractions=(0.7, 0.15, 0.15), seed=0):
    """Give samples without a split one, stratified by class, whole groups at a time."""
    rng = random.Random(seed)
    groups = collections.defaultdict(list)
    for i, s in enumerate(samples):
        if s.split is None:
            groups[(s.label, s.group)].append(i)
    out = list(samples)
    by_label = collections.defaultdict(list)
    for (label, _), members in sorted(groups.items()):
        by_label[label].append(members)
    for label, group_list in sorted(by_label.items()):
        rng.shuffle(group_list)
        total = sum(len(g) for g in group_list)
        bounds = [fractions[0] * total, (fractions[0] + fractions[1]) * total]
        done = 0
        for members in group_list:
            split = "train" if done < bounds[0] else "val" if done < bounds[1] else "test"
            done += len(members)
            for i in members:
                out[i] = out[i]._replace(split=split)
    return out


def carve_val(samples, fraction=0.15, seed=0):
    """For layouts with train/test only (SF-MASK): move a stratified share of train to val."""
    rng = random.Random(seed)
    out = list(samples)
    by_label = collections.defaultdict(list)
    for i, s in enumerate(samples):
        if s.split == "train":
            by_label[s.label].append(i)
    for label, idx in sorted(by_label.items()):
        rng.shuffle(idx)
        for i in idx[:int(round(fraction * len(idx)))]:
            out[i] = out[i]._replace(split="val")
    return out


def subset(samples, fraction, seed=0):
    """A representative share of every split, stratified by (split, class)."""
    if fraction >= 1:
        return samples
    rng = random.Random(seed)
    cells = collections.defaultdict(list)
    for s in samples:
        cells[(s.split, s.label)].append(s)
    out = []
    for key in sorted(cells):
        members = cells[key]
        rng.shuffle(members)
        out.extend(members[:max(1, int(round(fraction * len(members))))])
    return out


def summarize(samples):
    """{split: {class: count}} plus per-source totals, for the checkpoint and the report."""
    table = collections.defaultdict(collections.Counter)
    sources = collections.defaultdict(collections.Counter)
    mass = collections.defaultdict(lambda: collections.defaultdict(float))
    for s in samples:
        table[s.split][s.label] += 1
        sources[s.source][s.split] += 1
        if s.split == "train":
            mass[s.source][s.label] += s.weight
    return {"splits": {k: dict(v) for k, v in sorted(table.items())},
            "sources": {k: dict(v) for k, v in sorted(sources.items())},
            "train_weight": {k: {c: round(w, 1) for c, w in sorted(v.items())} for k, v in sorted(mass.items())}}


def assign_weights(samples, synthetic_sources=(), synthetic_share=0.3):
    """Training weights, so that no single face or source defines a class.

    - A whole image counts 1 / (the images of its group and class): near-copies (a webcam
      set's video frames, fmd's pre-augmented images) and the variants synthesized from one
      face count as one face together. Scene crops are distinct faces and count 1 each.
    - Synthesized faces (``synthetic_sources``) are scaled, class by class among the training
      samples, so that they make up ``synthetic_share`` of every class they appear in. Since
      they are synthesized for mask and incorrect alike, the same share in both keeps the
      look of a pasted mask from telling the classes apart: only where it sits does.
    """
    sizes = collections.Counter((s.source, s.group, s.label) for s in samples if s.box is None)
    out = [s._replace(weight=1.0 / sizes[(s.source, s.group, s.label)]) if s.box is None else s
           for s in samples]
    if not synthetic_sources or not 0 < synthetic_share < 1:
        return out
    mass = collections.defaultdict(float)  # (label, synthetic?) -> summed weight in train
    for s in out:
        if s.split == "train":
            mass[(s.label, s.source in synthetic_sources)] += s.weight
    factor = {}
    for (label, synthetic), synth_mass in list(mass.items()):
        real_mass = mass.get((label, False), 0.0)
        if synthetic and real_mass > 0:
            factor[label] = synthetic_share / (1 - synthetic_share) * real_mass / synth_mass
    return [s._replace(weight=s.weight * factor.get(s.label, 1.0)) if s.source in synthetic_sources else s
            for s in out]


def prepare(roots, classes, min_size=8, seed=0, subset_fraction=1.0, face_crop=None, train_only=(),
            synthetic_share=0.3):
    """Read, clean, split and weigh every data root; returns (samples, hygiene).

    ``train_only``: roots whose every sample goes to training (a single-person webcam set,
    a synthesized set: neither may decide a validation or test score). ``face_crop``: a
    detector name (``train.facecrop``) that crops whole images to their face as the edge
    service would; None keeps whole images. ``synthetic_share``: see ``assign_weights``.
    """
    hygiene = Hygiene()
    samples, synthetic = [], set()
    for root in list(roots) + list(train_only):
        source = load_source(root)
        unused = [s for s in source if s.label not in classes]
        for s in unused:
            hygiene.note("class_not_trained_%s" % s.label, s.path)
        source = [s for s in source if s.label in classes]
        source, _ = clean(source, min_size, hygiene)
        if root in train_only:
            source = [s._replace(split="train") for s in source]
        if any(s.split == "train" for s in source) and not any(s.split == "val" for s in source) \
                and root not in train_only:
            source = carve_val(source, seed=seed)
        source = stratified_split(source, seed=seed)
        if face_crop:  # after the split, so that cropping leaves every image in its split
            from train.facecrop import find_faces
            source = find_faces(source, face_crop, hygiene, min_size)
        if is_synthetic(root):
            synthetic.update(s.source for s in source)
        samples.extend(source)
    samples = subset(samples, subset_fraction, seed)
    if not samples:
        raise DataError("no usable images in %s" % ", ".join(list(roots) + list(train_only)))
    return assign_weights(samples, synthetic, synthetic_share), hygiene
