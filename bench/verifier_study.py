"""Would a second look at every detection pay? A face / not-face verifier behind the detector.

The shipped detector keeps faces above its operating point (0.32) because below it the false
alarms grow fast (val: 1.0 per image at 0.32, 5.4 at 0.1), yet below it lie many real faces
(kaggle853 test recall 87.9 % at 0.32, 92.0 % at 0.1), mostly small ones. This study asks
whether a small classifier that looks again at each candidate can hold the false alarms while
the detector runs lower:

1. the edge's own detector (``RetinaFaceDetector``, the file's 512 px anchor floor, each
   set's boxes in its own framing as the trainer scores them) runs on every scene at
   ``--candidates`` (0.1); a candidate is a face if it overlaps an annotated face at IoU 0.5
   or more. In the train scenes, candidates at IoU 0.3-0.5 are left out, and so are those
   on faces the annotators left out (the WIDER original's detections at 0.3 or more that
   touch no annotation, as ``--ignore-unannotated`` finds them), so that real faces are
   not taught as background;
2. a torchvision MobileNetV2 (ImageNet weights) learns face / not face from a square crop
   around each train candidate, ``--context`` times its longest side, at ``--size`` px;
3. each val / test candidate is rescored detector score x verifier probability (with the
   flip) and scored with the trainer's detection metrics (``train.detector.evaluate``):
   face AP@0.5, and recall within 1 false positive per image with the threshold chosen on
   the pooled val scenes, against the detector alone at its operating point and at the
   candidates' floor; ``--out`` gets two contact sheets of test candidates: the background
   still kept at the val threshold, and the faces still missed.

    .venv/bin/python bench/verifier_study.py --data ../shared/data/kaggle853 \\
        --data ../shared/data/moxa3k --out runs/verifier [--train-sources kaggle853] \\
        [--context 2.0] [--size 64] [--epochs 4]

A measurement, not product code: about 5 minutes of mining (cached in ``--out``) and 2 minutes
a training epoch on this 2-core CPU.
"""
import argparse
import json
import os
import sys
import time
from collections import defaultdict

import cv2
import numpy as np
import torch
import torch.nn as nn
import torchvision
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from edge.infer.detectors.retinaface import RetinaFaceDetector  # noqa: E402
from edge.infer.track import iou_matrix  # noqa: E402
from train.detector.boxstyle import unannotated  # noqa: E402
from train.detector.data import load_sets  # noqa: E402
from train.detector.evaluate import FP_BUDGET, FaceScores, edge_settings  # noqa: E402
from train.detector.evaluate import model_convention as detector_framing  # noqa: E402
from train.detector.evaluate import source_adjustments as original_detector_passes  # noqa: E402

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
UNANNOTATED_SCORE = 0.3


def square_crop(image, box, size, context):
    """A square crop ``context`` x the box's longest side around its centre, at ``size`` px,
    the image's edge pixels repeated beyond it: every network input the same size and framing
    (``edge.measure.misses.context_crop`` clips at the edge instead, for looking at)."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1, 4.0) * context
    scale = size / side
    m = np.float32([[scale, 0, size / 2 - (x1 + x2) / 2 * scale], [0, scale, size / 2 - (y1 + y2) / 2 * scale]])
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def unannotated_faces(sets, models_dir, cache_dir):
    """{(source, key): boxes} of faces the WIDER original finds at 0.3 or more in the train
    scenes that touch no annotation (its pass cached where the detector trainer caches it)."""
    _, _, dets = original_detector_passes(sets, models_dir, edge_settings(), cache_dir, threads=2)
    return {(source, scene.key): unannotated(*dets[source][scene.key], gt_boxes=scene.boxes,
                                             min_score=UNANNOTATED_SCORE)
            for source, splits in sets.items() for scene in splits["train"]}


def mine(sets, split, model, confidence, ignore=None):
    """Every candidate of the detector at ``confidence`` in the split's scenes: a dict of arrays
    (source, key, path, score, box xyxy, label 1 face / 0 not)."""
    to_source = (detector_framing(model) or {}).get("to_source", {})
    rows = defaultdict(list)
    for source, splits in sets.items():
        settings = dict(edge_settings(), confidence=confidence)
        detector = RetinaFaceDetector(None, model=model, threads=2, backend="ort",
                                      box_adjust=to_source.get(source, "model"), **settings)
        for scene in tqdm(splits[split], desc="candidates in %s %s" % (source, split), disable=None):
            boxes, scores = detector.detect(cv2.imread(scene.path, cv2.IMREAD_COLOR))
            overlap = np.zeros(len(boxes))
            if len(boxes) and len(scene.boxes):
                overlap = iou_matrix(boxes, scene.boxes).max(axis=1)
            left_out = np.zeros(len(boxes), bool)
            if ignore is not None and len(ignore.get((source, scene.key), [])) and len(boxes):
                left_out = iou_matrix(boxes, ignore[(source, scene.key)]).max(axis=1) > 0.1
            for box, score, iou, out in zip(boxes, scores, overlap, left_out):
                if ignore is not None and iou < 0.5 and (iou >= 0.3 or out):
                    continue  # neither clearly a face nor clearly background
                for name, value in (("source", source), ("key", scene.key), ("path", scene.path), ("score", score),
                                    ("box", box), ("label", int(iou >= 0.5))):
                    rows[name].append(value)
    return {name: np.array(values) for name, values in rows.items()}


def crops_of(candidates, size, context):
    """uint8 BGR crops of every candidate (each image read once)."""
    out = np.zeros((len(candidates["label"]), size, size, 3), np.uint8)
    by_path = defaultdict(list)
    for i, path in enumerate(candidates["path"]):
        by_path[path].append(i)
    for path, idx in by_path.items():
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        for i in idx:
            out[i] = square_crop(image, candidates["box"][i], size, context)
    return out


def to_tensor(crops):
    x = torch.from_numpy(crops[..., ::-1].copy()).permute(0, 3, 1, 2).float() / 255.0
    return (x - MEAN) / STD


def train_verifier(crops, labels, epochs, batch=128, lr=1e-3, seed=0):
    """MobileNetV2 (ImageNet weights) fine-tuned on face / not face, one-cycle AdamW, flips and brightness."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1")
    model.classifier[1] = nn.Linear(model.last_channel, 2)
    labels = torch.from_numpy(labels).long()
    steps = epochs * ((len(labels) + batch - 1) // batch)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    for epoch in range(epochs):
        model.train()
        order, total, start = rng.permutation(len(labels)), 0.0, time.time()
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            x = to_tensor(crops[idx])
            x = x.flip(3) if rng.random() < 0.5 else x
            x = x * (0.8 + 0.4 * torch.rand(len(idx), 1, 1, 1))
            loss = nn.functional.cross_entropy(model(x), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        print("verifier epoch %d/%d: loss %.4f (%.0f s)" % (epoch + 1, epochs, total / len(order), time.time() - start),
              flush=True)
    return model.eval()


def face_probability(model, crops):
    """P(face) for each crop, the mean of the crop and its mirror."""
    out = []
    with torch.no_grad():
        for i in range(0, len(crops), 256):
            x = to_tensor(crops[i:i + 256])
            out.append((torch.softmax(model(x), 1)[:, 1] + torch.softmax(model(x.flip(3)), 1)[:, 1]) / 2)
    return torch.cat(out).numpy()


def scene_scores(sets, split, candidates, scores, threshold):
    """{source and "pooled": FaceScores} of the candidates whose ``scores`` reach ``threshold``."""
    by_scene = defaultdict(list)
    for i, (source, key) in enumerate(zip(candidates["source"], candidates["key"])):
        if scores[i] >= threshold:
            by_scene[(source, key)].append(i)
    out = {}
    for source, splits in sets.items():
        tally = FaceScores(threshold)
        for scene in splits[split]:
            idx = by_scene.get((source, scene.key), [])
            tally.add(scene.boxes, candidates["box"][idx].reshape(-1, 4), scores[idx])
        out[source] = tally
    out["pooled"] = FaceScores.pooled(out.values())
    return out


def contact_sheet(crops, labels, path, columns=8, tile=96):
    """The crops in a grid, each labelled "detector score / P(face)" (labels: strings)."""
    tiles = []
    for crop, text in zip(crops, labels):
        tile_image = cv2.resize(crop, (tile, tile), interpolation=cv2.INTER_NEAREST)
        cv2.putText(tile_image, text, (2, 10), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 255, 255), 1)
        tiles.append(tile_image)
    tiles = tiles or [np.zeros((tile, tile, 3), np.uint8)]
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % columns)
    cv2.imwrite(path, np.vstack([np.hstack(tiles[i:i + columns]) for i in range(0, len(tiles), columns)]))


def draw_mistakes(candidates, rescored, threshold, operating, size, context, out, n=48, seed=0):
    """Two sheets of test candidates drawn at random: background kept at ``threshold`` (the
    false alarms left) and faces the detector missed at its ``operating`` point that the
    verifier does not bring back."""
    rng = np.random.default_rng(seed)
    face = candidates["label"] == 1
    for name, chosen in (("background_kept", ~face & (rescored >= threshold)),
                         ("faces_still_missed", face & (candidates["score"] < operating) & (rescored < threshold))):
        idx = rng.permutation(np.nonzero(chosen)[0])[:n]
        subset = {k: v[idx] for k, v in candidates.items()}
        texts = ["%.2f / %.2f" % (candidates["score"][i], rescored[i] / candidates["score"][i]) for i in idx]
        contact_sheet(crops_of(subset, size, context), texts, os.path.join(out, "test_%s.png" % name))


def summary(tallies):
    keys = ("ap50", "recall50", "recall_small50", "fp_per_image", "recall_at_budget", "threshold_at_budget")
    return {name: {k: t.result(FP_BUDGET)[k] for k in keys} for name, t in tallies.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", action="append", required=True, metavar="DIR")
    p.add_argument("--model", default="models/face_detector.onnx")
    p.add_argument("--models-dir", default="models/detectors", help="where the WIDER original is")
    p.add_argument("--cache-dir", default=os.path.join("runs", "cache"), help="the original detector's cached passes")
    p.add_argument("--out", required=True)
    p.add_argument("--train-sources", help="comma-separated sources the verifier learns from (default: all)")
    p.add_argument("--candidates", type=float, default=0.1, help="the detector's confidence for candidates")
    p.add_argument("--context", type=float, default=2.0)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    sets, _ = load_sets(args.data)
    candidates = {}
    for split in ("train", "val", "test"):
        cache = os.path.join(args.out, "candidates-%s-%g.npz" % (split, args.candidates))
        if not os.path.exists(cache):
            ignore = unannotated_faces(sets, args.models_dir, args.cache_dir) if split == "train" else None
            np.savez(cache, **mine(sets, split, args.model, args.candidates, ignore))
        candidates[split] = dict(np.load(cache))
    train = candidates["train"]
    if args.train_sources:
        keep = np.isin(train["source"], args.train_sources.split(","))
        train = {k: v[keep] for k, v in train.items()}
    print("train candidates: %d (%d faces)" % (len(train["label"]), train["label"].sum()), flush=True)
    model = train_verifier(crops_of(train, args.size, args.context), train["label"], args.epochs)
    operating = RetinaFaceDetector(None, model=args.model, backend="ort", confidence=None).confidence  # the file's
    results, rescored = {}, {}
    for split in ("val", "test"):
        c = candidates[split]
        rescored[split] = c["score"] * face_probability(model, crops_of(c, args.size, args.context))
        results[split] = {
            "detector at its operating point %.4f" % operating: summary(
                scene_scores(sets, split, c, c["score"], operating)),
            "detector at %g" % args.candidates: summary(scene_scores(sets, split, c, c["score"], args.candidates)),
            "detector x verifier": summary(scene_scores(sets, split, c, rescored[split], 0.0))}
    # The operating point a product would ship: the pooled val threshold within budget, applied to test.
    threshold = results["val"]["detector x verifier"]["pooled"]["threshold_at_budget"]
    results["test"]["detector x verifier at the val threshold %.4f" % threshold] = summary(
        scene_scores(sets, "test", candidates["test"], rescored["test"], threshold))
    draw_mistakes(candidates["test"], rescored["test"], threshold, operating, args.size, args.context, args.out)
    args_out = dict(vars(args), train_candidates=int(len(train["label"])), train_faces=int(train["label"].sum()))
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"args": args_out, "results": results}, f, indent=1)
    for split, rows in results.items():
        print("\n%s: AP50 / recall50 / under 32 px / FP per image / recall within %g FP per image (its threshold)"
              % (split, FP_BUDGET))
        for name, by_source in rows.items():
            print("  " + name)
            for source, r in by_source.items():
                print("    %-10s %.4f / %.4f / %.4f / %.2f / %.4f (%s)" % (
                    source, r["ap50"] or 0, r["recall50"] or 0, r["recall_small50"] or 0, r["fp_per_image"] or 0,
                    r["recall_at_budget"] or 0, r["threshold_at_budget"]))


if __name__ == "__main__":
    main()
