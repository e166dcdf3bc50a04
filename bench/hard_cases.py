"""What each hard case does to a classifier: the same test faces, clean and with an occluder
before the mouth, sunglasses or blur drawn on them (train/augment.py), or shrunk to a
12-32 px face and back (train/transforms.py's low resolution); seeded per face.

    .venv/bin/python bench/hard_cases.py MODEL.pt|MODEL.onnx [MODEL2 ...] [--data ../shared/data/kaggle853]
        [--split test] [--json]

For every model and case: accuracy over the classes the model has, and the compliance view
(recall of non-compliant faces; how many bare faces were called masked, the two-class
model's typical mistake; how many masks were called non-compliant, a false alarm). A model
trained with a hard case should lose little when it is drawn; one trained without it shows
what the case costs.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from train import data, report  # noqa: E402
from train.augment import HARD_CASES  # noqa: E402
from train.engine import FaceDataset  # noqa: E402
from train.evaluate import load_any  # noqa: E402
from train.transforms import LOWRES_SIDES, degrade_resolution, normalize  # noqa: E402


def lowres(crop, rng):
    """The training's low-resolution case: a 12-32 px face (the sides training draws from)."""
    return degrade_resolution(crop, int(rng.integers(LOWRES_SIDES[0], LOWRES_SIDES[1] + 1)))


DRAWN = HARD_CASES + (("lowres", lowres),)
CASES = ("clean",) + tuple(name for name, _ in DRAWN)


def faces(root, split, meta, min_size=8):
    """Letterboxed uint8 crops and true labels of a data set's split."""
    samples = [s for s in data.load_source(root) if split == "all" or s.split == split]
    samples, _ = data.clean(samples, min_size)
    dataset = FaceDataset(samples, list(meta["classes"]), meta, None, cache=False)
    return [dataset.boxed(i) for i in range(len(samples))], [s.label for s in samples]


def score(model, meta, crops, labels, case, seed=0):
    """Metrics of ``model`` on ``crops`` with ``case`` drawn on each (one rng per face, seeded)."""
    draw = dict(DRAWN).get(case)
    batch = []
    for i, crop in enumerate(crops):
        if draw is not None:  # drawn on the crop the model sees, as in training
            crop = draw(crop, np.random.default_rng(seed + i))
        batch.append(normalize(crop, meta["mean"], meta["std"]))
    with torch.no_grad():
        probs = torch.cat([model(torch.from_numpy(np.stack(batch[k:k + 128]))).float().softmax(1)
                           for k in range(0, len(batch), 128)]).numpy()
    classes = list(meta["classes"])
    known = np.array([label in classes for label in labels])
    targets = np.array([classes.index(label) if label in classes else -1 for label in labels])
    metrics = report.compute_metrics(targets[known], probs[known], classes)
    metrics["compliance"] = report.compliance_metrics(labels, probs, classes)
    return metrics


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help=".pt checkpoints or .onnx models")
    parser.add_argument("--data", default=os.path.join("..", "shared", "data", "kaggle853"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = {}
    print("| model | case | accuracy | non-compliant recall | bare faces called masked | masks called non-compliant |")
    print("|---|---|---|---|---|---|")
    for path in args.models:
        model, meta = load_any(path)
        model.eval()
        crops, labels = faces(args.data, args.split, meta)
        for case in CASES:
            m = score(model, meta, crops, labels, case)
            by_label = m["compliance"]["by_label"]
            bare = by_label.get("no_mask", {"n": 0, "called_non_compliant": 0})
            masked = by_label.get("mask", {"n": 0, "called_non_compliant": 0})
            results["%s %s" % (path, case)] = m
            print("| %s | %s | %.2f %% | %.2f %% | %d / %d | %d / %d |" % (
                os.path.basename(os.path.dirname(path)) or path, case, 100 * m["accuracy"],
                100 * m["compliance"]["recall"], bare["n"] - bare["called_non_compliant"], bare["n"],
                masked["called_non_compliant"], masked["n"]))
            sys.stdout.flush()
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
