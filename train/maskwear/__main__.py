"""Generate a synthesized-wearing data set: ``python -m train.maskwear --data DIR --out DIR``.

Writes ``OUT/mask/*.jpg`` and ``OUT/incorrect/*.jpg`` (a folder per class, which
``train`` reads as it is), ``OUT/manifest.csv`` (one row per image: its placement, target
face, texture and group), ``OUT/summary.json`` (counts, skips by reason, sources and
licences), ``OUT/sheet.png`` (target / mask / incorrect_nose / incorrect_chin for some
faces) and ``OUT/textures.png`` (a sample of the textures).
"""
import argparse
import collections
import csv
import json
import os
import shutil
import sys
import time

import cv2
import numpy as np

from . import placement as placing
from . import sheet, sources, synth
from .landmarks import DEFAULT_MODELS, MIN_FACE, LandmarkFinder, Skip

JPEG_QUALITY = 95  # as the scene sets were converted; every class is written the same way
MANIFEST_FIELDS = ("file", "label", "placement", "target", "target_source", "target_image",
                   "target_box", "crop_box", "landmarks", "texture", "texture_source",
                   "texture_image", "texture_flipped", "texture_mirrored", "blur", "group")


def get_args_parser():
    p = argparse.ArgumentParser(prog="python -m train.maskwear", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=os.path.join("..", "shared", "data"),
                   help="folder holding kaggle853/, fmd/ and moxa3k/ (any of them)")
    p.add_argument("--out", default=os.path.join("runs", "maskwear"), help="output folder")
    p.add_argument("--per-face", type=int, default=1, help="textures worn by each bare face (each in all placements)")
    p.add_argument("--limit", type=int, default=None, help="use at most N bare faces (a seeded sample)")
    p.add_argument("--max-textures", type=int, default=None,
                   help="examine at most N masked faces for textures (a seeded sample)")
    p.add_argument("--sources", default=",".join(sources.SOURCES), help="data sets to use")
    p.add_argument("--seed", type=int, default=0, help="texture choice, jitter and samples")
    p.add_argument("--split-seed", type=int, default=0,
                   help="the trainer's --split-seed: fmd's train split is recomputed with it")
    p.add_argument("--min-face", type=int, default=MIN_FACE, help="smallest face (px) whose landmarks are trusted")
    p.add_argument("--models", default=DEFAULT_MODELS, help="folder with retinaface_mnet025.onnx")
    p.add_argument("--check-model", default=synth.DEFAULT_CHECK_MODEL,
                   help="classifier (.onnx) that must agree a face is bare / masked before it is "
                        "used as a target / texture; 'none' to trust the annotations")
    p.add_argument("--sheet-faces", type=int, default=24, help="faces on the contact sheet")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier data set in --out")
    return p


def sample(items, limit, seed):
    """At most ``limit`` of ``items``, a seeded random sample (all of them when None)."""
    if limit is None or limit >= len(items):
        return list(items)
    order = np.random.default_rng(seed).permutation(len(items))[:limit]
    return [items[i] for i in sorted(order)]


def prepare_out(out, overwrite):
    """Create ``out``; refuse to mix with an earlier data set unless ``overwrite``."""
    made = [n for n in ("mask", "incorrect", "manifest.csv") if os.path.exists(os.path.join(out, n))]
    if made and not overwrite:
        raise SystemExit("error: %s already holds a data set (%s); pass --overwrite to replace it"
                         % (out, ", ".join(made)))
    for name in ("mask", "incorrect"):
        shutil.rmtree(os.path.join(out, name), ignore_errors=True)
        os.makedirs(os.path.join(out, name))


def _fmt(values, digits=1):
    return " ".join("%.*f" % (digits, v) for v in np.asarray(values).ravel())


def write_result(out, result, writer, counts):
    """Write one face's images and manifest rows."""
    c = result.candidate
    for (k, name), image in sorted(result.images.items()):
        wearing = result.wearings[k]
        label = placing.PLACEMENTS[name].label
        fname = "%s__%s__%s.jpg" % (c.id, wearing.texture.id, name)
        rel = os.path.join(label, fname)
        ok = cv2.imwrite(os.path.join(out, rel), image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise OSError("cannot write %s" % os.path.join(out, rel))
        writer.writerow({"file": rel, "label": label, "placement": name, "target": c.id,
                         "target_source": c.source, "target_image": c.path,
                         "target_box": _fmt(result.frame_box), "crop_box": _fmt(result.crop_box, 0),
                         "landmarks": _fmt(result.face.landmarks), "texture": wearing.texture.id,
                         "texture_source": wearing.texture.source, "texture_image": wearing.texture.image,
                         "texture_flipped": int(wearing.jitter["flip"]),
                         "texture_mirrored": wearing.texture.mirrored, "blur": "%.1f" % wearing.blur,
                         "group": c.group})
        counts[(label, name)] += 1


def sheet_rows(out, results, count, seed):
    """Rows for the contact sheet: ``count`` faces at random, taken in turn from each source."""
    rng = np.random.default_rng(seed)
    queues = collections.OrderedDict()
    for r in results:
        queues.setdefault(r.candidate.source, []).append(r)
    queues = [[q[i] for i in rng.permutation(len(q))] for _, q in sorted(queues.items())]
    chosen = []
    while len(chosen) < count and any(queues):
        for q in queues:
            if q and len(chosen) < count:
                chosen.append(q.pop())
    rows = []
    for r in chosen:
        x1, y1, x2, y2 = r.crop_box
        crops = [synth.load(r.candidate.path)[y1:y2, x1:x2]]
        for name, p in placing.PLACEMENTS.items():
            path = os.path.join(out, p.label, "%s__%s__%s.jpg" % (r.candidate.id, r.wearings[0].texture.id, name))
            crops.append(cv2.imread(path)[:, :, ::-1])
        rows.append(("%s (%dpx)" % (r.candidate.id, x2 - x1), crops))
    return rows


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    from tqdm import tqdm
    started = time.time()
    names = [n.strip() for n in args.sources.split(",") if n.strip()]
    unknown = sorted(set(names) - set(sources.SOURCES))
    if unknown:
        raise SystemExit("error: --sources: unknown %s; known: %s" % (unknown, ", ".join(sources.SOURCES)))
    prepare_out(args.out, args.overwrite)
    finder = LandmarkFinder(args.models, min_face=args.min_face)
    check = None if args.check_model == "none" else synth.LabelCheck(args.check_model)
    masked, used_masked = sources.candidates(args.data, "masked", names, args.split_seed)
    bare, used_bare = sources.candidates(args.data, "bare", names, args.split_seed)
    masked = sample(masked, args.max_textures, args.seed)
    bare = sample(bare, args.limit, args.seed + 1)

    texture_skips = collections.Counter()
    with tqdm(total=len(masked), desc="cutting textures", unit="face", disable=None) as bar:
        pool = synth.build_textures(finder, masked, texture_skips, check, bar)
    print("textures: %d kept of %d masked faces" % (len(pool), len(masked)), file=sys.stderr)

    target_skips, counts, results = collections.Counter(), collections.Counter(), []
    with open(os.path.join(args.out, "manifest.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, MANIFEST_FIELDS)
        writer.writeheader()
        for c in tqdm(sorted(bare, key=lambda c: (c.path, c.id)), desc="wearing masks", unit="face", disable=None):
            try:
                result = synth.synthesize(finder, c, pool, args.per_face, args.seed, check)
            except Skip as skip:
                target_skips[skip.reason] += 1
                continue
            write_result(args.out, result, writer, counts)
            results.append(result._replace(images=None))

    used_textures = collections.Counter(w.texture.source for r in results for w in r.wearings)
    summary = {
        "command": "python -m train.maskwear " + " ".join(argv if argv is not None else sys.argv[1:]),
        "seed": args.seed, "split_seed": args.split_seed, "per_face": args.per_face,
        "images": sum(counts.values()),
        "by_label": {lab: sum(n for (l, _), n in counts.items() if l == lab) for lab in ("mask", "incorrect")},
        "by_placement": {name: sum(n for (_, p), n in counts.items() if p == name) for name in placing.PLACEMENTS},
        "targets": {"candidates": len(bare), "used": len(results),
                    "used_by_source": dict(collections.Counter(r.candidate.source for r in results)),
                    "skipped": dict(sorted(target_skips.items()))},
        "textures": {"candidates": len(masked), "kept": len(pool),
                     "kept_by_source": dict(collections.Counter(t.source for t in pool.textures)),
                     "one_side_mirrored": sum(1 for t in pool.textures if t.mirrored),
                     "worn_by_source": dict(used_textures),
                     "skipped": dict(sorted(texture_skips.items()))},
        "sources": {n: {"licence": sources.SOURCES[n]["licence"], "split": "train only",
                        "textures_from": n in used_masked, "targets_from": n in used_bare}
                    for n in sorted(set(used_masked) | set(used_bare))},
        "crop_margin": synth.CROP_MARGIN, "min_face_px": args.min_face,
        "check_model": None if check is None else os.path.basename(args.check_model),
        "seconds": round(time.time() - started, 1),
    }
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    if results:
        sheet.save(os.path.join(args.out, "sheet.png"),
                   sheet.contact_sheet(sheet_rows(args.out, results, args.sheet_faces, args.seed)))
    shown = sample(pool.textures, 60, args.seed)
    sheet.save(os.path.join(args.out, "textures.png"), sheet.texture_sheet(shown))
    print(json.dumps({k: summary[k] for k in ("images", "by_label", "targets", "textures")}, indent=2))
    return summary


if __name__ == "__main__":
    main()
