"""``python -m train.detector.calibrate FILE.onnx --data DIR [--data DIR2]``: an exported
detector's operating point, chosen on val with the edge's own detector code.

Fine-tuning leaves the largest anchors (512 px, stride 32) nearly untrained on faces: the
training crops are 640 px and their faces small, so those anchors almost never see one, and
on portraits they fire on the sky, ceiling or wall beside a large face. On the val scenes of
the shipped detector's two sets they were the only anchor size with more false detections
than true ones (94 against 47 at confidence 0.3; the 256 px anchors beside them: 20 against
129), and 18 of its 20 false positives of 64 px and over on kaggle853 val came from them,
while the faces they do find mostly score 0.97 and more. A higher lowest score at those
anchors alone removes most of these false alarms; the price is the large faces they find
with a middling score.

For each candidate lowest score at the 512 px anchors (``--candidates``; "none": no floor),
the file runs in ``RetinaFaceDetector`` on the val scenes of every set at the validation
floor (``DEFAULT_CONFIDENCE``), each set's boxes mapped to its own framing as the training
scored them; the candidate with the highest pooled recall within ``--fp-budget`` false
positives per image wins (ties: the lowest), and the confidence that keeps the pooled val
false positives within budget with it becomes the operating point. Both are written into
the file's ``operating_point`` metadata (``confidence``, ``anchor_confidence``), with every
candidate's scores, which the edge reads; the weights are not touched. At the chosen floor the
same is done for both views merged (the flip pass of still photos, ``Detector(flip_pass=True)``,
whose scores are distributed otherwise): its confidence becomes ``flip_confidence``.
``--flip-only`` keeps the file's operating point and adds (or renews) only that.
"""
import argparse
import json
import os

import onnx
from tqdm import tqdm

from edge.errors import ModelError
from edge.infer.classify.onnx_meta import read_metadata_props
from edge.infer.detectors.base import DEFAULT_CONFIDENCE
from edge.infer.detectors.retinaface import RetinaFaceDetector
from edge.infer.detectors.retinaface_format import LARGEST_ANCHOR, anchor_floors, point_metadata
from train.detector.engine import operating_point
from train.detector.evaluate import (
    FP_BUDGET,
    FaceScores,
    edge_settings,
    evaluate_scenes,
    model_convention,
)

CALIBRATED_ANCHOR = LARGEST_ANCHOR  # 512 px, stride 32
CANDIDATES = (None, 0.5, 0.7, 0.8, 0.9, 0.95)


def score_candidates(model, sets, candidates=CANDIDATES, fp_budget=FP_BUDGET, threads=2, split="val",
                     flip_pass=False):
    """[(candidate, operating point of ``engine.operating_point``, {source or "pooled":
    FaceScores.result()})] for each lowest score at the 512 px anchors (None: no floor), scored
    on ``sets[source][split]``; ``flip_pass``: both views merged."""
    settings = dict(edge_settings(), confidence=DEFAULT_CONFIDENCE, flip_pass=flip_pass)
    to_source = (model_convention(model) or {}).get("to_source", {})
    total = len(candidates) * sum(len(split_sets[split]) for split_sets in sets.values())
    out = []
    with tqdm(total=total, desc="calibrating %s" % os.path.basename(model), disable=None) as bar:
        for floor in candidates:
            scores = {}
            for source, split_sets in sets.items():
                detector = RetinaFaceDetector(
                    None, model=model, threads=threads, backend="ort",
                    box_adjust=to_source.get(source, "model"),
                    anchor_confidence=None if floor is None else {CALIBRATED_ANCHOR: floor}, **settings)
                scores[source] = evaluate_scenes(detector, split_sets[split], bar)
            point = operating_point(scores, fp_budget, settings["confidence"])
            pooled = FaceScores.pooled(scores.values()).result(fp_budget)
            out.append((floor, point, dict(((s, f.result(fp_budget)) for s, f in scores.items()), pooled=pooled)))
    return out


def choose(scored):
    """The entry of ``score_candidates`` with the highest pooled recall within budget (ties:
    the first, i.e. the lowest floor, as they are listed lowest first)."""
    best = None
    for entry in scored:
        recall = entry[1]["recall_at_budget"] or 0.0
        if best is None or recall > (best[1]["recall_at_budget"] or 0.0):
            best = entry
    return best


def calibrated_point(scored, split):
    """The ``operating_point`` metadata for the chosen candidate, with every candidate's scores."""
    floor, point, _ = choose(scored)
    point = dict(point)
    if floor is not None:
        point["anchor_confidence"] = {str(CALIBRATED_ANCHOR): floor}
    point["calibration"] = {
        "split": split, "anchor": CALIBRATED_ANCHOR, "by": "python -m train.detector.calibrate",
        "candidates": [{"anchor_confidence": f, "confidence": p["confidence"],
                        "recall_at_budget": p["recall_at_budget"],
                        "fp_per_image": r["pooled"]["fp_per_image"], "large_fp": r["pooled"]["large_fp"],
                        "recall50": r["pooled"]["recall50"]} for f, p, r in scored]}
    return point


def with_flip_point(point, flip_scored):
    """``point`` with the flip pass's confidence (``score_candidates(..., flip_pass=True)`` at
    the point's floor) and how it was chosen."""
    (floor, flip, results), = flip_scored
    point = dict(point, flip_confidence=flip["confidence"])
    point["flip_calibration"] = {"by": "python -m train.detector.calibrate", "anchor_confidence": floor,
                                 "recall_at_budget": flip["recall_at_budget"],
                                 "fp_per_image": results["pooled"]["fp_per_image"]}
    return point


def file_point(model):
    """(the file's operating_point metadata, its floor at the 512 px anchors or None)."""
    props = read_metadata_props(model)
    return point_metadata(model, props), anchor_floors(model, props).get(CALIBRATED_ANCHOR)


def write_point(model, point, out):
    """Copy ``model`` to ``out`` (may be the same file) with ``point`` as its operating_point."""
    proto = onnx.load(model)
    entries = [p for p in proto.metadata_props if p.key == "operating_point"]
    entry = entries[0] if entries else proto.metadata_props.add(key="operating_point")
    entry.value = json.dumps(point)
    onnx.save(proto, out)


def main(argv=None):
    from train.detector.data import load_sets
    p = argparse.ArgumentParser(prog="python -m train.detector.calibrate", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="an exported face detector (python -m train.detector.export)")
    p.add_argument("--data", action="append", required=True, metavar="DIR",
                   help="VOC scene sets with splits.csv (the ones it was trained on)")
    p.add_argument("--out", help="the calibrated file (default: rewrite MODEL's metadata in place)")
    p.add_argument("--candidates", default=",".join("none" if c is None else "%g" % c for c in CANDIDATES),
                   help="lowest scores at the %d px anchors to try, lowest first (none: no floor)" % CALIBRATED_ANCHOR)
    p.add_argument("--fp-budget", type=float, default=FP_BUDGET)
    p.add_argument("--split", default="val")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--flip-only", action="store_true",
                   help="keep the file's operating point; choose only the flip pass's confidence at its floor")
    args = p.parse_args(argv)
    try:
        candidates = [None if c.strip() == "none" else float(c) for c in args.candidates.split(",")]
    except ValueError:
        candidates = [-1.0]
    if any(c is not None and not 0 <= c <= 1 for c in candidates):
        p.error("--candidates: numbers in 0..1 or none, comma-separated, got %r" % args.candidates)
    try:
        RetinaFaceDetector(None, model=args.model, backend="ort")  # refuses a file that is no detector export
    except ModelError as exc:
        raise SystemExit("calibrate: %s" % exc)
    sets, _ = load_sets(args.data)
    out = args.out or args.model
    if args.flip_only:
        point, floor = file_point(args.model)
        point = with_flip_point(point, score_candidates(args.model, sets, [floor], args.fp_budget, args.threads,
                                                        args.split, flip_pass=True))
        write_point(args.model, point, out)
        print("%s: flip_confidence %s (both views; pooled %s recall %s within %g FP/image), the rest kept" % (
            out, point["flip_confidence"], args.split, point["flip_calibration"]["recall_at_budget"], args.fp_budget))
        return
    scored = score_candidates(args.model, sets, candidates, args.fp_budget, args.threads, args.split)
    print("%d px floor | confidence | %s recall within %g FP/image | FP/image at %g | of them >= 64 px"
          % (CALIBRATED_ANCHOR, args.split, args.fp_budget, DEFAULT_CONFIDENCE))
    for floor, point, results in scored:
        print("%-13s | %-10s | %-28s | %-14s | %d" % (
            "none" if floor is None else floor, point["confidence"], point["recall_at_budget"],
            results["pooled"]["fp_per_image"], results["pooled"]["large_fp"]))
    point = calibrated_point(scored, args.split)
    point = with_flip_point(point, score_candidates(args.model, sets, [choose(scored)[0]], args.fp_budget,
                                                    args.threads, args.split, flip_pass=True))
    write_point(args.model, point, out)
    print("%s: confidence %s, anchor_confidence %s (pooled %s recall %s within %g FP/image); both views: "
          "flip_confidence %s (recall %s)" % (
              out, point["confidence"], point.get("anchor_confidence", "none"), args.split,
              point["recall_at_budget"], args.fp_budget, point["flip_confidence"],
              point["flip_calibration"]["recall_at_budget"]))


if __name__ == "__main__":
    main()
