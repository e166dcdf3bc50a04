"""The fine-tuned RetinaFace on TensorRT: an FP16 engine built once, checked, cached.

On a Jetson Nano the detector is the heaviest model of a frame (1.0 GFLOP at 960x540,
``edge.measure.flops``); onnxruntime would run it on the four CPU cores. Here it becomes an
engine the way the classifier does (``edge.infer.classify.engine``: the same builder,
sidecar, cache, build lock and memory of failed builds), with what differs for a detector:

- The network is fully convolutional, so one engine serves every frame size: one
  optimization profile with batch 1 and sides from ``MIN_SIDE`` to ``max_side`` (the
  detector's input long side, rounded up to a multiple of 32), its kernels tuned for a 16:9
  frame at that long side. The outputs (``loc``, ``conf``, ``landmarks``) grow with the frame.
- The check before the engine is cached compares it with onnxruntime on mosaics of real
  faces (the CC0 crops shipped beside the models, ``check_frames``): every anchor that either
  runtime scores as a candidate face must get nearly the same score and box.
- ``TrtDetectorSession`` has onnxruntime's ``run(output_names, feeds)``, so that
  ``RetinaFaceDetector`` runs either backend through one code path.

Tested here against a stand-in for TensorRT only (tests/helpers.py); it has not run on a GPU.
"""
import logging
import os

import cv2
import numpy as np

from edge.common import sha256
from edge.errors import ModelError
from edge.infer.classify.engine import (
    BuildError,
    cached_build,
    cached_engine_path,
    remove_engine,
    serialize,
    write_engine,
)
from edge.infer.classify.onnx_meta import read_metadata_props
from edge.infer.classify.sidecar import check_sidecar, read_sidecar
from edge.infer.classify.trt import TrtRunner, gpu_name, import_pycuda, import_tensorrt
from edge.infer.detectors.retinaface_format import (
    METADATA_KIND,
    SMALLEST_INPUT,
    anchors_for,
    check_metadata,
    decode,
    to_blob,
)

KIND = METADATA_KIND  # the sidecar's kind: the same name as the export's metadata
MIN_SIDE = SMALLEST_INPUT
CANDIDATE = 0.3  # anchors either runtime scores at least this are compared (the default confidence)
SCORE_TOLERANCE = 0.05  # FP16 moves a face score by a few thousandths; a broken engine by far more
MIN_AGREE = 0.99  # of the candidates within the tolerance
MIN_BOX_IOU = 0.9  # the 1st percentile of the candidates' box IoU between the runtimes
CHECK_FRAME = (540, 960)  # H, W of the check mosaics
CHECK_SIDES = (24, 40, 64, 96, 144)  # face sizes placed on them, px

_log = logging.getLogger(__name__)


def max_side_for(input_size):
    """The engine's largest frame side for a detector input long side (None: frames as they come, up to 1920)."""
    side = int(input_size) if input_size else 1920
    return -(-side // 32) * 32


def engine_profile(max_side):
    """(min, opt, max) input shapes: batch 1, sides MIN_SIDE..max_side, tuned for 16:9 at max_side."""
    opt = (1, 3, int(round(max_side * 9 / 16.0)), max_side)
    return (1, 3, MIN_SIDE, MIN_SIDE), opt, (1, 3, max_side, max_side)


def engine_path_for(onnx_path, cache_dir, max_side, precision="fp16"):
    """``CACHE/<onnx stem>.<model sha>.trt<version>.<gpu>.<precision>.s<max side>.engine``."""
    trt, cuda = import_tensorrt(), import_pycuda()
    return cached_engine_path(onnx_path, cache_dir, sha256(onnx_path), trt.__version__, gpu_name(cuda),
                              precision, 1, shapes="s%d" % max_side)


def build_detector_engine(onnx_path, engine_path, max_side, precision="fp16", workspace_mb=256, log=_log.info):
    """Build ``engine_path`` (+ sidecar) from an exported face detector; return the sidecar dict."""
    props = read_metadata_props(onnx_path)
    check_metadata(onnx_path, props)  # a file the edge would refuse is refused before minutes of building
    if precision == "int8":
        raise BuildError("INT8 is not offered for the detector (no calibration scenes); build it with --fp16")
    with open(onnx_path, "rb") as f:
        data = f.read()
    serialized, facts = serialize(onnx_path, data, {"input": engine_profile(max_side)}, precision, workspace_mb,
                                  log, "frames up to %dx%d" % (max_side, max_side))
    return write_engine(engine_path, serialized, dict(facts, kind=KIND, meta=props, max_batch=1,
                                                      max_side=int(max_side)))


class TrtDetectorSession(object):
    """A face-detector engine with onnxruntime's ``run(output_names, {"input": blob})``."""

    def __init__(self, engine_path):
        if not os.path.isfile(engine_path):
            raise ModelError("TensorRT engine not found: %s" % engine_path)
        self.engine_path = engine_path
        self.sidecar = read_sidecar(engine_path, KIND)
        check_sidecar(self.sidecar, import_tensorrt().__version__, gpu_name(import_pycuda()), engine_path)
        self.max_side = int(self.sidecar["max_side"])
        self._runner = TrtRunner(engine_path, {"input": (1, 3, self.max_side, self.max_side)})

    def run(self, output_names, feeds):
        """The named outputs for ``feeds`` (a 1x3xHxW float32 ``input``, sides up to ``max_side``)."""
        h, w = np.shape(feeds["input"])[2:]
        if max(h, w) > self.max_side:
            raise ModelError("a %dx%d input is larger than %s was built for (%d px); set detector.input_size "
                             "to at most %d or delete the engine" % (w, h, self.engine_path, self.max_side,
                                                                      self.max_side))
        outputs = self._runner.run(feeds)
        return [outputs[name] for name in output_names]

    def close(self):
        """Free the engine; safe to call twice."""
        if self._runner is not None:
            self._runner.close()
            self._runner = None


def check_frames(faces, count=2):
    """Mosaics of real faces (``(name, rgb)`` crops) at several sizes on a grey 960x540 frame, BGR."""
    frames = []
    if not faces:
        return frames
    h, w = CHECK_FRAME
    for k in range(count):
        frame = np.full((h, w, 3), 118, np.uint8)
        x, y, row, i = 8, 8, 0, k
        while True:
            side = CHECK_SIDES[i % len(CHECK_SIDES)]
            if x + side > w:
                x, y, row = 8, y + row + 8, 0
            if y + side > h:
                break
            rgb = faces[i % len(faces)][1]
            frame[y:y + side, x:x + side] = cv2.resize(rgb, (side, side))[:, :, ::-1]
            x, row, i = x + side + 8, max(row, side), i + 1
        frames.append(frame)
    return frames


def paired_iou(a, b):
    """IoU of box ``a[i]`` with box ``b[i]`` (xyxy), for each i."""
    w = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return w * h / np.maximum(area(a) + area(b) - w * h, 1e-9)


def compare_runtimes(engine_session, ort_session, frames):
    """Score and box agreement of two RetinaFace sessions on ``frames`` (BGR), over candidate anchors."""
    diffs, ious = [], []
    for frame in frames:
        h, w = frame.shape[:2]
        blob = to_blob(frame)
        (loc_a, conf_a), (loc_b, conf_b) = [s.run(["loc", "conf"], {"input": blob}) for s in (engine_session,
                                                                                               ort_session)]
        score_a, score_b = conf_a[0, :, 1], conf_b[0, :, 1]
        idx = np.nonzero(np.maximum(score_a, score_b) >= CANDIDATE)[0]
        anchors = anchors_for(h, w)[idx]
        diffs.append(np.abs(score_a[idx] - score_b[idx]))
        boxes_a, boxes_b = decode(loc_a[0, idx], anchors), decode(loc_b[0, idx], anchors)
        ious.append(paired_iou(boxes_a, boxes_b))
    diffs, ious = np.concatenate(diffs), np.concatenate(ious)
    if not len(diffs):
        return {"frames": len(frames), "candidates": 0}
    return {"frames": len(frames), "candidates": int(len(diffs)), "max_score_diff": float(diffs.max()),
            "agree": float(np.mean(diffs <= SCORE_TOLERANCE)), "box_iou_p1": float(np.percentile(ious, 1))}


def verify_detector_engine(engine_path, onnx_path, faces, log=_log.info):
    """Check the engine against onnxruntime on ``check_frames(faces)``; the stats, or None when
    onnxruntime is absent. Raises BuildError when the two disagree."""
    try:
        import onnxruntime as ort
    except ImportError:
        log("detector engine check skipped: onnxruntime is not installed")
        return None
    frames = check_frames(faces)
    if not frames:
        log("detector engine check skipped: no face crops to build check frames from")
        return None
    session = TrtDetectorSession(engine_path)
    try:
        stats = compare_runtimes(session, ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"]),
                                 frames)
    finally:
        session.close()
    if not stats["candidates"]:
        raise BuildError("neither runtime found a face candidate on the check frames: nothing was compared")
    log("TensorRT %s vs onnxruntime (face detector): %d frames, %d candidate anchors, %.2f%% within %.2f "
        "of the score (max diff %.4f), box IoU 1st percentile %.3f"
        % (session.sidecar["precision"].upper(), stats["frames"], stats["candidates"], 100 * stats["agree"],
           SCORE_TOLERANCE, stats["max_score_diff"], stats["box_iou_p1"]))
    if stats["agree"] < MIN_AGREE or stats["box_iou_p1"] < MIN_BOX_IOU:
        raise BuildError("detector engine %s disagrees with onnxruntime (need %.0f%% of scores within %.2f and "
                         "box IoU >= %.2f)" % (engine_path, 100 * MIN_AGREE, SCORE_TOLERANCE, MIN_BOX_IOU))
    return stats


def build_verified_detector(onnx_path, engine_path, faces, max_side, log=_log.info, **options):
    """``build_detector_engine`` then ``verify_detector_engine``; a failing engine is removed."""
    build_detector_engine(onnx_path, engine_path, max_side, log=log, **options)
    try:
        return verify_detector_engine(engine_path, onnx_path, faces, log=log)
    except Exception:
        remove_engine(engine_path)
        raise


def ensure_detector_engine(onnx_path, cache_dir, max_side, faces=None, log=_log.info, precision="fp16"):
    """The cached, checked engine of a face detector ONNX for frames up to ``max_side``; built on first use."""
    path = engine_path_for(onnx_path, cache_dir, max_side, precision)
    return cached_build(path, sha256(onnx_path), lambda: build_verified_detector(
        onnx_path, path, faces, max_side, log=log, precision=precision), log, kind=KIND)
