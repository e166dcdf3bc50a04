"""Does averaging the weights of several fine-tuned detectors ("a model soup") pay?

Runs of the detector recipe all start from the same WIDER FACE weights and differ by their
options (a moving average, large-face crops, the shipped recipe), so their weights may lie in
one basin where their average is as good as each and steadier (Wortsman et al., 2022). This
averages the weights of the given detectors, each an export (``.onnx``, loaded conv by conv
as ``--init`` loads it) or a trainer checkpoint (``best.pt``; ``FILE.pt:ema_state`` picks
another entry of it), and writes a checkpoint that the trainer's evaluator scores:

    .venv/bin/python bench/detector_soup.py --out runs/soup/ab.pt \\
        models/face_detector.onnx runs/det-ema998/best.pt
    .venv/bin/python -m train.detector.evaluate runs/soup/ab.pt --split val \\
        --data ../shared/data/kaggle853 --data ../shared/data/moxa3k

The soup's metadata (framing, anchors, training data) is the first checkpoint's, with the
list of ingredients added: it is a measurement, not a model to ship as it is.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from train.detector import checkpoint  # noqa: E402
from train.detector.net import RetinaFace, load_from_onnx  # noqa: E402


def ingredient(spec):
    """(state dict, checkpoint meta or None) of one detector: an export or a checkpoint entry."""
    if spec.endswith(".onnx"):
        return load_from_onnx(spec).state_dict(), None
    path, _, key = spec.partition(":")
    payload = checkpoint.read(path)
    if (key or "model_state") not in payload:
        raise SystemExit("%s has no %r (it holds %s)" % (path, key, ", ".join(sorted(payload))))
    return payload[key or "model_state"], payload["meta"]


def soup(states):
    """The element-wise mean of state dicts with the same keys and shapes."""
    keys = set(states[0])
    for state in states[1:]:
        if set(state) != keys:
            raise SystemExit("the detectors do not share one layout")
    return {k: sum(s[k].float() for s in states) / len(states) for k in states[0]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("detectors", nargs="+", metavar="FILE", help="an export (.onnx) or a checkpoint (.pt[:entry])")
    p.add_argument("--out", required=True, help="the averaged checkpoint to write")
    args = p.parse_args(argv)
    loaded = [ingredient(spec) for spec in args.detectors]
    metas = [meta for _, meta in loaded if meta is not None]
    if not metas:
        raise SystemExit("give at least one trainer checkpoint: its metadata describes the soup")
    net = RetinaFace()
    net.load_state_dict(soup([state for state, _ in loaded]))
    meta = dict(metas[0], soup=list(args.detectors))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    checkpoint.save(args.out, net, meta)
    print("%s: the mean of %d detectors" % (args.out, len(loaded)))


if __name__ == "__main__":
    main()
