"""Face detection accuracy on annotated scenes, with the edge's own post-processing and metrics.

Detectors are ``edge.infer.detectors.base.Detector`` objects, so the frame scaling (long side
``input_size``), box adjustment, clipping, confidence and size limits and NMS are the edge's
code: ``TorchRetinaFace`` runs the PyTorch network inside that interface (for validation
during training), and the ONNX files (original or exported) run in the edge's own
``RetinaFaceDetector``. Matching and AP are ``edge.measure.metrics.greedy_match`` and
``average_precision``; the size bins are ``edge.measure.metrics.size_bin``'s.

Reported per split: face AP at IoU 0.5 and 0.3 (all labels are one class, face; the score
is the detector's), recall at IoU 0.5 / 0.3 overall and at 0.5 for faces under 32 px
(longest side, in the scene's own pixels), false positives per image (detections matching
no face at IoU 0.5), at the detector's operating point (confidence, min size, NMS).
"""
import inspect
import os

import cv2
import numpy as np
import torch
from tqdm import tqdm

from edge.app import config as edge_config
from edge.common import sha256
from edge.infer.detectors.base import Detector, empty
from edge.infer.detectors.retinaface import ONNX_FILE, RetinaFaceDetector, WiderRetinaFaceDetector, anchors_for, decode
from edge.measure.metrics import average_precision, greedy_match, size_bin
from train.detector import boxstyle
from train.detector.augment import preprocess

IOUS = (0.5, 0.3)


def edge_settings():
    """The edge service's default detector settings: confidence, min_size, nms_iou from
    ``edge/app/default_config.yaml`` and the RetinaFace detector's own default input long side."""
    det = edge_config.defaults()["detector"]
    size = det["input_size"] or inspect.signature(RetinaFaceDetector.__init__).parameters["input_size"].default
    return {"confidence": det["confidence"], "min_size": det["min_size"], "nms_iou": det["nms_iou"],
            "input_size": size}


class TorchRetinaFace(Detector):
    """The PyTorch network behind the edge's Detector interface (same scaling and post-processing).

    ``_detect`` mirrors ``RetinaFaceDetector._detect``: the same blob, the same anchors and
    decoding (imported), candidates above the confidence threshold only.
    """
    name = "retinaface-torch"

    def __init__(self, net, input_size=960, box_adjust=None, **common):
        Detector.__init__(self, input_size=input_size, box_adjust=box_adjust, **common)
        self.net = net

    def _detect(self, image, scale):
        h, w = image.shape[:2]
        with torch.no_grad():
            loc, conf, _ = self.net(torch.from_numpy(preprocess(image)))
        loc = loc[0].numpy()
        scores = torch.softmax(conf[0], dim=-1)[:, 1].numpy()
        idx = np.nonzero(scores >= self.confidence)[0]
        if not len(idx):
            return empty()
        return decode(loc[idx], anchors_for(h, w)[idx]), scores[idx]


def onnx_detector(models_dir, box_adjust, threads=1, **settings):
    """The edge's own detector on the original ``models_dir/retinaface_mnet025.onnx``."""
    return WiderRetinaFaceDetector(models_dir, threads=threads, box_adjust=box_adjust, **settings)


class FaceScores(object):
    """Accumulates (truth boxes, detections) per image; ``result()`` gives the metrics above."""

    def __init__(self):
        self.n_images = 0
        self.ranked = {iou: [] for iou in IOUS}  # (score, true positive)
        self.hits = {iou: 0 for iou in IOUS}
        self.n_faces = 0
        self.small = [0, 0]  # hits at 0.5, faces, for faces under 32 px
        self.false_positives = 0

    def add(self, gt_boxes, det_boxes, det_scores):
        """Score one image (xyxy boxes in the same pixels)."""
        gt_boxes = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
        det_boxes = np.asarray(det_boxes, np.float32).reshape(-1, 4)
        det_scores = np.asarray(det_scores, np.float32).reshape(-1)
        self.n_images += 1
        self.n_faces += len(gt_boxes)
        small = np.array([size_bin(b) == "<32" for b in gt_boxes], bool)
        for iou in IOUS:
            gt_to_det, det_to_gt = greedy_match(gt_boxes, det_boxes, det_scores, iou)
            self.hits[iou] += int((gt_to_det >= 0).sum())
            self.ranked[iou].extend(zip(det_scores.tolist(), (det_to_gt >= 0).tolist()))
            if iou == 0.5:
                self.false_positives += int((det_to_gt < 0).sum())
                self.small[0] += int((gt_to_det[small] >= 0).sum())
                self.small[1] += int(small.sum())

    def result(self):
        """{n_images, n_faces, n_small, ap50, ap30, recall50, recall30, recall_small50, fp_per_image}."""
        out = {"n_images": self.n_images, "n_faces": self.n_faces, "n_small": self.small[1]}
        for iou in IOUS:
            ranked = self.ranked[iou]
            ap = average_precision([s for s, _ in ranked], [t for _, t in ranked], self.n_faces)
            tag = int(round(iou * 100))
            out["ap%d" % tag] = None if ap is None else round(ap, 4)
            out["recall%d" % tag] = round(self.hits[iou] / float(self.n_faces), 4) if self.n_faces else None
        out["recall_small50"] = round(self.small[0] / float(self.small[1]), 4) if self.small[1] else None
        out["fp_per_image"] = round(self.false_positives / float(self.n_images), 4) if self.n_images else None
        return out


def evaluate_scenes(detector, scenes, progress=None):
    """Run ``detector.detect`` on each scene (``Scene`` from train.detector.data) and score it
    against the scene's annotated boxes; returns ``FaceScores.result()``."""
    scores = FaceScores()
    for scene in scenes:
        image = cv2.imread(scene.path, cv2.IMREAD_COLOR)
        if image is None:
            raise IOError("cannot decode %s" % scene.path)
        boxes, conf = detector.detect(image)
        scores.add(scene.boxes, boxes, conf)
        if progress is not None:
            progress.update(1)
    return scores.result()


def source_adjustments(sets, models_dir, settings, cache_dir=None, threads=1):
    """Each source's framing relative to the original detector, fitted on its train scenes
    (``boxstyle.fit``): ({source: adjustment}, {source: report}, {source: raw detections})."""
    raw = onnx_detector(models_dir, None, threads=threads, **settings)
    tag = sha256(raw.path)[:12]  # the cache belongs to this model file
    fitted, report, dets = {}, {}, {}
    for source, split in sets.items():
        cache = (os.path.join(cache_dir, "%s-train-raw-%d-%s.json" % (source, settings["input_size"], tag))
                 if cache_dir else None)
        with tqdm(total=len(split["train"]), desc="original detector on %s train" % source,
                  disable=None, leave=False) as bar:
            dets[source] = boxstyle.detector_pass(split["train"], raw, cache, bar)
        fitted[source], matched = boxstyle.fit([(dets[source][s.key][0], s.boxes) for s in split["train"]])
        report[source] = {"fitted_adjust": list(fitted[source]), "matched_faces": matched}
    return fitted, report, dets


def format_scores(r):
    """One line: AP@.5, AP@.3, recall@.5, recall <32 px, FP/image."""
    return "AP50 %.4f AP30 %.4f recall50 %.4f <32px %.4f FP/img %.3f (%d images, %d faces)" % (
        r["ap50"] or 0, r["ap30"] or 0, r["recall50"] or 0, r["recall_small50"] or 0,
        r["fp_per_image"] or 0, r["n_images"], r["n_faces"])


def model_convention(model):
    """The box_convention metadata of a best.pt checkpoint or an ONNX file (None: the original)."""
    import json

    if model.endswith(".pt"):
        from train.detector.checkpoint import read
        return read(model)["meta"].get("box_convention")
    import onnx
    props = dict((p.key, p.value) for p in onnx.load(model, load_external_data=False).metadata_props)
    return json.loads(props["box_convention"]) if "box_convention" in props else None


def model_detector(model, settings, box_adjust, threads=1):
    """A Detector for an ONNX file (the edge's RetinaFaceDetector) or a best.pt checkpoint
    (TorchRetinaFace)."""
    if model.endswith(".pt"):
        from train.detector.checkpoint import load_net
        net, _ = load_net(model)
        torch.set_num_threads(threads)
        return TorchRetinaFace(net, box_adjust=box_adjust, **settings)
    if os.path.basename(model) == ONNX_FILE and model_convention(model) is None:  # the WIDER FACE original
        return onnx_detector(os.path.dirname(os.path.abspath(model)), box_adjust, threads=threads, **settings)
    return RetinaFaceDetector(None, model=model, threads=threads, box_adjust=box_adjust, **settings)


def main(argv=None):
    """``python -m train.detector.evaluate MODEL --data DIR [--data DIR2] [--split test]``."""
    import argparse
    import json

    from edge.infer.detectors.retinaface import BOX_ADJUST
    from train.detector.data import load_sets
    p = argparse.ArgumentParser(prog="python -m train.detector.evaluate",
                                description="Face AP, recall and FP/image of a detector on scene sets, "
                                            "at the edge's default settings unless overridden.")
    p.add_argument("model", help="ONNX file (original or exported) or a best.pt checkpoint")
    p.add_argument("--data", action="append", required=True, metavar="DIR")
    p.add_argument("--split", default="test")
    p.add_argument("--box-adjust", default="auto",
                   help="auto: the model's own per-set adjustment (metadata), else the set's framing "
                        "fitted with the original detector on its train split; edge: the edge's "
                        "BOX_ADJUST; none; or four numbers dx1,dy1,dx2,dy2")
    for name, kind in (("confidence", float), ("min-size", float), ("nms-iou", float), ("input-size", int)):
        p.add_argument("--" + name, type=kind, help="override the edge default")
    p.add_argument("--original", default=os.path.join("models", "detectors"),
                   help="folder of the original ONNX (fits set framings for --box-adjust auto)")
    p.add_argument("--cache-dir", default=os.path.join("runs", "cache"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)
    settings = edge_settings()
    for key in settings:
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    sets, _ = load_sets(args.data)
    convention = model_convention(args.model) if args.box_adjust == "auto" else None
    results = {}
    for source in sets:
        if args.box_adjust == "edge":
            adjust = BOX_ADJUST
        elif args.box_adjust == "none":
            adjust = None
        elif args.box_adjust != "auto":
            adjust = tuple(float(v) for v in args.box_adjust.split(","))
        else:
            adjust = (convention or {}).get("to_source", {}).get(source)
            if adjust is None:
                fitted, _, _ = source_adjustments({source: sets[source]}, args.original, settings,
                                                  args.cache_dir, args.threads)
                adjust = fitted[source]
        detector = model_detector(args.model, settings, adjust, args.threads)
        result = evaluate_scenes(detector, sets[source][args.split])
        result.update(box_adjust=None if adjust is None else [round(float(v), 4) for v in adjust],
                      settings=dict(settings), split=args.split)
        results[source] = result
        print("%s %s %s: %s (box_adjust %s)" % (os.path.basename(args.model), source, args.split,
                                               format_scores(result), result["box_adjust"]))
    if args.json:
        with open(args.json, "w") as stream:
            json.dump(results, stream, indent=1)


if __name__ == "__main__":
    main()
