"""Face detection: ``create_detector(name, ...)`` -> Detector, one interface for all.

``detector.detect(frame_bgr) -> (boxes, scores)``: boxes float32 Nx4 xyxy in frame pixels,
scores float32 N, best first. The detectors:

- ``haar``: OpenCV's frontal-face cascade (ships with OpenCV; fast, misses masked faces);
- ``ssd``: OpenCV's res10 SSD (Caffe, cv2.dnn);
- ``retinaface``: RetinaFace-MobileNet0.25 fine-tuned here on masked crowds (ONNX,
  onnxruntime; shipped as models/face_detector.onnx); finds masked and tiny faces;
- ``retinaface-wider``: the same network with its original WIDER FACE weights;
- ``mtcnn``: MTCNN's P-, R- and O-Net cascade (ONNX, onnxruntime), the seed paper's detector.

The model files come from ``python -m edge.provision`` (``make models``), except the
fine-tuned RetinaFace (in the repository); MTCNN's from
``python -m export.mtcnn`` on a machine with torch (``make mtcnn``), copied to a device.
"""
import importlib
import inspect

from edge.errors import ConfigError
from edge.infer.detectors.base import Detector, check_frame, nms  # noqa: F401 (the public interface)
from edge.infer.detectors.files import default_models_dir

# name -> (module, class); imported on demand, so haar needs neither model files nor onnxruntime.
DETECTORS = {
    "haar": ("edge.infer.detectors.haar", "HaarDetector"),
    "ssd": ("edge.infer.detectors.ssd", "SsdDetector"),
    "retinaface": ("edge.infer.detectors.retinaface", "RetinaFaceDetector"),
    "retinaface-wider": ("edge.infer.detectors.retinaface", "WiderRetinaFaceDetector"),
    "mtcnn": ("edge.infer.detectors.mtcnn", "MtcnnDetector"),
}

def create_detector(name, models_dir=None, confidence=0.5, min_size=10, nms_iou=0.4, **options):
    """Build the face detector ``name`` (haar, ssd, retinaface, retinaface-wider, mtcnn).

    ``confidence``: lowest score kept (0..1); ``min_size``: smallest face kept, longest side
    in frame pixels; ``nms_iou``: overlap above which duplicates are merged;
    ``options``: the detector's own (see each class), e.g. ``input_size`` (long side, px),
    ``min_neighbors`` (haar), ``threads`` (retinaface, mtcnn), ``thresholds`` (mtcnn),
    ``model`` (retinaface: another fine-tuned export).
    Raises ConfigError for an unknown name or option, ModelError for a missing model file.
    """
    if name not in DETECTORS:
        raise ConfigError("unknown detector %r: accepted %s" % (name, ", ".join(sorted(DETECTORS))))
    module, cls_name = DETECTORS[name]
    cls = getattr(importlib.import_module(module), cls_name)
    accepted = sorted(detector_options(cls))
    unknown = sorted(k for k in options if k not in accepted)
    if unknown:
        raise ConfigError("detector %s has no option %s (its options: %s)"
                          % (name, ", ".join(unknown), ", ".join(accepted)))
    return cls(models_dir=models_dir or default_models_dir(), confidence=confidence,
               min_size=min_size, nms_iou=nms_iou, **options)


def detector_options(cls):
    """Keyword options a detector class takes: its own and the common ones."""
    names = set()
    for klass in (cls, Detector):
        params = inspect.signature(klass.__init__).parameters.values()
        names.update(p.name for p in params if p.kind == p.POSITIONAL_OR_KEYWORD)
    return names - {"self", "models_dir", "confidence", "min_size", "nms_iou"}
