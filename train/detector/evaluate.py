"""Face detection accuracy on annotated scenes, with the edge's own post-processing and metrics.

Detectors are ``edge.infer.detectors.base.Detector`` objects, so the frame scaling (long side
``input_size``), box adjustment, clipping, confidence and size limits and NMS are the edge's
code: ``TorchRetinaFace`` runs the PyTorch network inside that interface (for validation
during training), and the ONNX files (original or exported) run in the edge's own
``RetinaFaceDetector``. Matching and AP are ``edge.measure.metrics.greedy_match`` and
``average_precision``; the size bins are ``edge.measure.metrics.size_bin``'s.

Reported per split: face AP at IoU 0.5 and 0.3 (all labels are one class, face; the score
is the detector's), recall at IoU 0.5 / 0.3 overall and at 0.5 for faces under 32 px
(longest side, in the scene's own pixels) and for faces of 64 px and over, false positives per
image (detections matching no face at IoU 0.5) and how many of them are 64 px or over (on
portraits, the largest anchors firing on the wall or sky beside the face), at the detector's
operating point (confidence, min size, NMS); and the operating point the split itself would
choose: recall at IoU 0.5 at the lowest score threshold that keeps false positives within
``FP_BUDGET`` per image, and that threshold.
"""
import inspect
import os

import cv2
import numpy as np
import torch
from tqdm import tqdm

from edge.app import config as edge_config
from edge.common import sha256
from edge.infer.detectors.base import DEFAULT_CONFIDENCE, Detector, empty
from edge.infer.detectors.retinaface import ONNX_FILE, RetinaFaceDetector, WiderRetinaFaceDetector, anchors_for, decode
from edge.measure.metrics import SIZE_BINS, average_precision, greedy_match, size_bin
from train.detector import boxstyle
from train.detector.augment import preprocess

IOUS = (0.5, 0.3)
FP_BUDGET = 1.0  # false positives per image an operator tolerates (the product target)


def edge_settings():
    """The edge service's default detector settings: confidence, min_size, nms_iou and the
    close-up pass from ``edge/app/default_config.yaml`` and the RetinaFace detector's own
    default input long side and enlargement limit."""
    det = edge_config.defaults()["detector"]
    defaults = inspect.signature(RetinaFaceDetector.__init__).parameters
    size = det["input_size"] or defaults["input_size"].default
    upscale = det["max_upscale"] or defaults["max_upscale"].default
    # The edge's default confidence is the model's own operating point, chosen above this floor.
    confidence = DEFAULT_CONFIDENCE if det["confidence"] is None else det["confidence"]
    return {"confidence": confidence, "min_size": det["min_size"], "nms_iou": det["nms_iou"],
            "input_size": size, "max_upscale": upscale, "close_up_pass": det["close_up_pass"]}


class TorchRetinaFace(Detector):
    """The PyTorch network behind the edge's Detector interface (same scaling and post-processing).

    ``_detect`` mirrors ``RetinaFaceDetector._detect``: the same blob, the same anchors and
    decoding (imported), candidates above the confidence threshold only.
    """
    name = "retinaface-torch"
    largest_face = RetinaFaceDetector.largest_face

    def __init__(self, net, input_size=960, box_adjust=None, **common):
        Detector.__init__(self, input_size=input_size, box_adjust=box_adjust, **common)
        self.net = net

    def _detect(self, image, scale):
        h, w = image.shape[:2]
        with torch.no_grad():
            loc, conf, _ = self.net(torch.from_numpy(preprocess(image)))
        loc = loc[0].numpy()
        scores = torch.softmax(conf[0], dim=-1)[:, 1].numpy()
        idx = np.nonzero(scores >= self.pass_confidence)[0]
        if not len(idx):
            return empty()
        return decode(loc[idx], anchors_for(h, w)[idx]), scores[idx]


def onnx_detector(models_dir, box_adjust, threads=1, **settings):
    """The edge's own detector on the original ``models_dir/retinaface_mnet025.onnx``."""
    return WiderRetinaFaceDetector(models_dir, threads=threads, box_adjust=box_adjust, **settings)


class FaceScores(object):
    """Accumulates (truth boxes, detections) per image; ``result()`` gives the metrics above.

    ``floor``: the confidence below which the detector reported nothing (its ``confidence``);
    the lowest threshold ``result()`` can name.
    """

    def __init__(self, floor=0.0):
        self.floor = float(floor)
        self.n_images = 0
        self.ranked = {iou: [] for iou in IOUS}  # (score, true positive)
        self.hits = {iou: 0 for iou in IOUS}
        self.n_faces = 0
        self.by_size = {name: [0, 0] for name, _, _ in SIZE_BINS}  # size bin: [hits at 0.5, faces]
        self.false_positives = 0
        self.large_false_positives = 0

    @classmethod
    def pooled(cls, parts):
        """One FaceScores over several splits (or sets): their images, faces and detections
        together, floored at the highest of their floors."""
        parts = list(parts)
        out = cls(max([p.floor for p in parts] or [0.0]))
        for p in parts:
            out.n_images += p.n_images
            out.n_faces += p.n_faces
            out.false_positives += p.false_positives
            out.large_false_positives += p.large_false_positives
            for name, tally in p.by_size.items():
                out.by_size[name] = [a + b for a, b in zip(out.by_size[name], tally)]
            for iou in IOUS:
                out.ranked[iou].extend(p.ranked[iou])
                out.hits[iou] += p.hits[iou]
        return out

    def add(self, gt_boxes, det_boxes, det_scores):
        """Score one image (xyxy boxes in the same pixels)."""
        gt_boxes = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
        det_boxes = np.asarray(det_boxes, np.float32).reshape(-1, 4)
        det_scores = np.asarray(det_scores, np.float32).reshape(-1)
        self.n_images += 1
        self.n_faces += len(gt_boxes)
        gt_bins = np.array([size_bin(b) for b in gt_boxes], object)
        det_large = np.array([size_bin(b) == ">=64" for b in det_boxes], bool)
        for iou in IOUS:
            gt_to_det, det_to_gt = greedy_match(gt_boxes, det_boxes, det_scores, iou)
            self.hits[iou] += int((gt_to_det >= 0).sum())
            self.ranked[iou].extend(zip(det_scores.tolist(), (det_to_gt >= 0).tolist()))
            if iou == 0.5:
                self.false_positives += int((det_to_gt < 0).sum())
                self.large_false_positives += int(((det_to_gt < 0) & det_large).sum())
                for name, tally in self.by_size.items():
                    in_bin = gt_bins == name
                    tally[0] += int((gt_to_det[in_bin] >= 0).sum())
                    tally[1] += int(in_bin.sum())

    def at_budget(self, fp_budget=FP_BUDGET):
        """(recall at IoU 0.5, threshold) at the lowest score threshold (keep scores >= it)
        whose false positives stay within ``fp_budget`` x images.

        Detections with equal scores are kept or dropped together. When all detections fit
        the budget the threshold is ``floor``, the detector's own confidence: detections below
        it were never seen, so a lower threshold might still fit but cannot be measured here.
        When not even the top-scored detection fits (a budget under one false positive in all),
        no threshold keeps anything: (0.0, None). (None, None) without images or faces.
        """
        if not self.n_images or not self.n_faces:
            return None, None
        allowed = fp_budget * self.n_images
        ranked = sorted(self.ranked[0.5], key=lambda st: -st[0])
        threshold, tp, fp, kept_tp = None, 0, 0, 0
        i = 0
        while i < len(ranked):
            j = i
            while j < len(ranked) and ranked[j][0] == ranked[i][0]:  # a group of equal scores
                tp += ranked[j][1]
                fp += not ranked[j][1]
                j += 1
            if fp > allowed + 1e-9:
                break
            threshold, kept_tp, i = ranked[i][0], tp, j
        if i == len(ranked):  # everything seen fits
            threshold = self.floor
        return kept_tp / float(self.n_faces), threshold

    def result(self, fp_budget=FP_BUDGET):
        """{n_images, n_faces, n_small, n_large, ap50, ap30, recall50, recall30, recall_small50,
        recall_large50, fp_per_image, large_fp, fp_budget, recall_at_budget,
        threshold_at_budget} (see ``at_budget``)."""
        small, large = self.by_size["<32"], self.by_size[">=64"]
        out = {"n_images": self.n_images, "n_faces": self.n_faces, "n_small": small[1], "n_large": large[1]}
        for iou in IOUS:
            ranked = self.ranked[iou]
            ap = average_precision([s for s, _ in ranked], [t for _, t in ranked], self.n_faces)
            tag = int(round(iou * 100))
            out["ap%d" % tag] = None if ap is None else round(ap, 4)
            out["recall%d" % tag] = round(self.hits[iou] / float(self.n_faces), 4) if self.n_faces else None
        out["recall_small50"] = round(small[0] / float(small[1]), 4) if small[1] else None
        out["recall_large50"] = round(large[0] / float(large[1]), 4) if large[1] else None
        out["fp_per_image"] = round(self.false_positives / float(self.n_images), 4) if self.n_images else None
        out["large_fp"] = self.large_false_positives
        recall, threshold = self.at_budget(fp_budget)
        out["fp_budget"] = fp_budget
        out["recall_at_budget"] = None if recall is None else round(recall, 4)
        out["threshold_at_budget"] = None if threshold is None else round(threshold, 4)
        return out


def evaluate_scenes(detector, scenes, progress=None):
    """Run ``detector.detect`` on each scene (``Scene`` from train.detector.data) and score it
    against the scene's annotated boxes; returns the ``FaceScores`` (``.result()``: the metrics)."""
    scores = FaceScores(detector.confidence)
    for scene in scenes:
        image = cv2.imread(scene.path, cv2.IMREAD_COLOR)
        if image is None:
            raise IOError("cannot decode %s" % scene.path)
        boxes, conf = detector.detect(image)
        scores.add(scene.boxes, boxes, conf)
        if progress is not None:
            progress.update(1)
    return scores


def source_adjustments(sets, models_dir, settings, cache_dir=None, threads=1):
    """Each source's framing relative to the original detector, fitted on its train scenes
    (``boxstyle.fit``): ({source: adjustment}, {source: report}, {source: raw detections})."""
    # The training's data preparation runs the original at the frame scale the shipped detector
    # was trained with, small scenes enlarged without limit and without the close-up pass (its
    # cache is keyed by input size).
    raw = onnx_detector(models_dir, None, threads=threads, **dict(settings, max_upscale=None, close_up_pass=False))
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
    """One line: AP@.5, AP@.3, recall@.5, recall <32 px and >=64 px, FP/image and those of 64 px
    and over, recall at the FP budget and its threshold (results of older runs, without some
    of them, print without them)."""
    line = "AP50 %.4f AP30 %.4f recall50 %.4f <32px %.4f" % (
        r["ap50"] or 0, r["ap30"] or 0, r["recall50"] or 0, r["recall_small50"] or 0)
    if "recall_large50" in r:
        line += " >=64px %s" % _or_dash(r["recall_large50"], "%.4f")
    line += " FP/img %.3f" % (r["fp_per_image"] or 0)
    if "large_fp" in r:
        line += " (%d of >=64px)" % r["large_fp"]
    if "recall_at_budget" in r:
        line += " | at <=%g FP/img: recall50 %s threshold %s" % (
            r["fp_budget"], _or_dash(r["recall_at_budget"], "%.4f"), _or_dash(r["threshold_at_budget"], "%.4f"))
    return line + " (%d images, %d faces)" % (r["n_images"], r["n_faces"])


def _or_dash(value, fmt):
    return "-" if value is None else fmt % value


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
    """``python -m train.detector.evaluate MODEL --data DIR [--data DIR2] [--split test]``; with
    several sets also one line over all their images (``pooled``: its threshold_at_budget is
    the one operating point that keeps the total false positives within budget)."""
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
    for name, kind in (("confidence", float), ("min-size", float), ("nms-iou", float), ("input-size", int),
                       ("max-upscale", float)):
        p.add_argument("--" + name, type=kind, help="override the edge default")
    p.add_argument("--close-up-pass", action="store_true", default=None, help="override the edge default")
    p.add_argument("--no-close-up-pass", action="store_false", dest="close_up_pass")
    p.add_argument("--original", default=os.path.join("models", "detectors"),
                   help="folder of the original ONNX (fits set framings for --box-adjust auto)")
    p.add_argument("--cache-dir", default=os.path.join("runs", "cache"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--fp-budget", type=float, default=FP_BUDGET,
                   help="false positives per image for recall_at_budget / threshold_at_budget; with "
                        "several sets also the pooled threshold (all their images together)")
    args = p.parse_args(argv)
    settings = edge_settings()
    for key in settings:
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    sets, _ = load_sets(args.data)
    convention = model_convention(args.model) if args.box_adjust == "auto" else None
    results, parts = {}, []
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
        scores = evaluate_scenes(detector, sets[source][args.split])
        parts.append(scores)
        result = scores.result(args.fp_budget)
        result.update(box_adjust=None if adjust is None else [round(float(v), 4) for v in adjust],
                      settings=dict(settings), split=args.split)
        results[source] = result
        print("%s %s %s: %s (box_adjust %s)" % (os.path.basename(args.model), source, args.split,
                                               format_scores(result), result["box_adjust"]))
    if len(parts) > 1:
        pooled = FaceScores.pooled(parts).result(args.fp_budget)
        results["pooled"] = pooled
        print("%s all sets %s: %s" % (os.path.basename(args.model), args.split, format_scores(pooled)))
    if args.json:
        with open(args.json, "w") as stream:
            json.dump(results, stream, indent=1)


if __name__ == "__main__":
    main()
