"""The picture of a data report: every region of an ignore-regions CSV (faces the annotators
left out, `edge.evaluate --ignore`) drawn on its scene, one tile each, with its row's
split, image and verdict, the annotated faces nearby in grey for comparison.

    .venv/bin/python bench/region_sheet.py docs/data-reports/kaggle853-unannotated-faces.csv \
        --data ../shared/data/kaggle853 --out out/unannotated.png [--split test]
"""
import argparse
import os
import sys

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from edge.measure.misses import context_crop  # noqa: E402
from edge.measure.truth import read_ignore_rows, read_voc  # noqa: E402

TILE, CAPTION, COLUMNS = 160, 28, 8
RED, GREY = (0, 0, 255), (160, 160, 160)


def tile(image, box, known, caption):
    """One region with three box sizes of context (at least 96 px), scaled to TILE."""
    crop, place = context_crop(image, box, 1.5, 48.0, TILE)
    for b, colour, width in [(b, GREY, 1) for b in known] + [(box, RED, 2)]:
        p = place(b)
        cv2.rectangle(crop, p[:2], p[2:], colour, width)  # drawn on the crop: clipped to it
    out = np.zeros((TILE + CAPTION, TILE, 3), np.uint8)
    out[:crop.shape[0], :crop.shape[1]] = crop
    for row, part in enumerate(caption):
        cv2.putText(out, part, (3, TILE + 11 + 12 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return out


def region_sheet(report, root, split=None):
    """The contact sheet (BGR array) of the report's regions in ``root``'s scenes."""
    rows = [(r, box) for r, box in read_ignore_rows(report) if split is None or r.get("split") == split]
    scenes = dict((s.key, s) for s in read_voc(root))
    tiles = []
    for row, box in rows:
        scene = scenes.get(row["image"])
        if scene is None:
            raise SystemExit("%s: %s is not a scene of %s" % (report, row["image"], root))
        caption = ("%s %s" % (row.get("split", ""), os.path.splitext(row["image"])[0]),
                   "%s %dpx" % (row.get("verdict", ""), max(box[2] - box[0], box[3] - box[1])))
        tiles.append(tile(cv2.imread(scene.path), box, scene.boxes, caption))
    if not tiles:
        raise SystemExit("%s: no region%s" % (report, " in split %s" % split if split else ""))
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % COLUMNS)
    return np.vstack([np.hstack(tiles[i:i + COLUMNS]) for i in range(0, len(tiles), COLUMNS)])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("report", help="CSV with image, x1, y1, x2, y2 (and split, verdict)")
    p.add_argument("--data", required=True, help="the VOC scene set the report is about")
    p.add_argument("--split", help="only this split's rows")
    p.add_argument("--out", default=os.path.join("out", "regions.png"))
    args = p.parse_args(argv)
    sheet = region_sheet(args.report, args.data, args.split)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    if not cv2.imwrite(args.out, sheet):
        raise SystemExit("cannot write %s" % args.out)
    print("%s: %d x %d px" % (args.out, sheet.shape[1], sheet.shape[0]))


if __name__ == "__main__":
    main()
