"""``python -m train.evaluate [--model PATH] DATA [--json]``: metrics of a model on any data set.

DATA is a folder-per-class tree, SF-MASK or a VOC scene set (class-name synonyms as in
``train.data``). The model is a ``.pt`` checkpoint or an ``.onnx`` export; both read their
preprocessing from their own metadata. Without ``--model``, the shipped default model.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

from train import checkpoint, data, report
from train.engine import FaceDataset, make_loader, predict
from train.facecrop import CHOICES, detector_name, find_faces
from train.transforms import EvalTransform

DEFAULT_MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models",
                             "mask_classifier.onnx")


class OnnxModel(torch.nn.Module):
    """An exported model in onnxruntime behind the torch call interface ``predict`` uses."""

    def __init__(self, path):
        super().__init__()
        import onnx
        import onnxruntime as ort

        from edge.infer.model_meta import from_string_props
        props = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
        self.meta = from_string_props(props, source=path)
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, images):
        probs = self.session.run(None, {self.input_name: images.numpy().astype(np.float32)})[0]
        # predict() applies softmax to logits; the graph already gives probabilities.
        return torch.from_numpy(np.log(np.clip(probs, 1e-12, 1)))


def load_any(path):
    """(model, meta) from a .pt checkpoint or an .onnx file."""
    if path.endswith(".onnx"):
        model = OnnxModel(path)
        return model, model.meta
    return checkpoint.load_model(path)


def evaluate_path(model_path, data_root, split="all", min_size=8, flip=False, batch_size=64,
                  face_crop="trained", non_compliant_threshold=None, errors_png=None):
    """Metrics dict (``report.compute_metrics`` keys and ``compliance``) of ``model_path`` on ``data_root``.

    Faces of a class the model does not have (a worn-wrong mask for a two-class model)
    are left out of the class metrics but scored in the compliance view, where they are
    non-compliant. ``face_crop``: detector that crops whole images to their face;
    ``trained`` (default) uses what the model was trained with, ``none`` keeps whole images.
    ``non_compliant_threshold``: the compliance view at the service's setting of that name.
    ``errors_png``: draw the most confident mistakes there (``report.plot_errors``).
    """
    model, meta = load_any(model_path)
    if face_crop == "trained":
        face_crop = (meta.get("train_args") or {}).get("face_crop")
    face_crop = detector_name(face_crop)
    source = data.load_source(data_root)
    if split != "all":
        source = [s for s in source if s.split == split]
    samples, hygiene = data.clean(source, min_size)
    if face_crop:
        samples = find_faces(samples, face_crop, hygiene, min_size)
    if not samples:
        raise data.DataError("no usable faces in %s (split %s)" % (data_root, split))
    dataset = FaceDataset(samples, meta["classes"], meta, EvalTransform(meta), cache=False)
    labels, probs = predict(model, make_loader(dataset, batch_size, False, 0, 0), torch.device("cpu"), flip)
    known = labels >= 0
    if not known.any():
        raise data.DataError("no faces of classes %s in %s (split %s)" % (meta["classes"], data_root, split))
    metrics = report.compute_metrics(labels[known], probs[known], meta["classes"])
    names = [s.label for s in samples]
    metrics["compliance"] = report.compliance_metrics(names, probs, meta["classes"], non_compliant_threshold)
    metrics["operating_points"] = report.operating_points(names, probs, meta["classes"])
    sides = [max(s.box[2] - s.box[0], s.box[3] - s.box[1]) if s.box is not None else None for s in samples]
    metrics["by_face_size"] = report.by_face_size(names, probs, meta["classes"], sides, non_compliant_threshold)
    if errors_png:
        rows = np.nonzero(known)[0]
        report.plot_errors(labels[rows], probs[rows], meta["classes"], lambda i: dataset.boxed(int(rows[i])),
                           errors_png, title="%s %s" % (os.path.basename(os.path.normpath(data_root)), split),
                           limit=48)
    metrics.update(model=model_path, data=data_root, split=split, skipped_other_classes=int((~known).sum()),
                   face_crop=face_crop or "none", hygiene=hygiene.summary())
    return metrics


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", help="folder-per-class tree, SF-MASK or VOC scene set")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=".pt checkpoint or .onnx (default: shipped model)")
    parser.add_argument("--split", default="all", choices=["all", "train", "val", "test"],
                        help="only this split (VOC splits.csv, SF-MASK folders)")
    parser.add_argument("--min-size", type=int, default=8,
                        help="skip faces whose longest side is smaller (px; default 8)")
    parser.add_argument("--tta-flip", action="store_true",
                        help="average each face with its mirror image (as export.onnx --tta-flip does in the graph)")
    parser.add_argument("--face-crop", default="trained", choices=("trained",) + CHOICES,
                        help="crop whole images to their detected face (trained: as the model was trained)")
    parser.add_argument("--non-compliant-threshold", type=float, default=None, metavar="T",
                        help="the compliance view with faces called non-compliant once 1 - P(mask) >= T "
                             "(the service's classifier.non_compliant_threshold; default: the top class)")
    parser.add_argument("--errors", metavar="PNG", help="draw the most confident mistakes (up to 48) there")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.non_compliant_threshold is not None and not 0.0 <= args.non_compliant_threshold <= 1.0:
        parser.error("--non-compliant-threshold %s: need a value from 0 to 1" % args.non_compliant_threshold)
    if not os.path.isfile(args.model):
        parser.error("model not found: %s" % args.model)
    try:
        metrics = evaluate_path(args.model, args.data, args.split, args.min_size, args.tta_flip,
                                face_crop=args.face_crop, non_compliant_threshold=args.non_compliant_threshold,
                                errors_png=args.errors)
    except (data.DataError, checkpoint.CheckpointError, ValueError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(metrics))
    else:
        print(report.format_metrics(metrics, os.path.basename(os.path.normpath(args.data))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
