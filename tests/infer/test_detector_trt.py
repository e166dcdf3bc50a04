"""The face detector's TensorRT path: engine build, cache, check against onnxruntime, the
onnxruntime fallback, and the command line, with the shipped detector and real faces.

TensorRT cannot be installed here: these tests run our control flow against the stand-in of
tests/helpers.py, whose "engine" runs the ONNX in onnxruntime, so the buffers, shapes and
copies carry real numbers. They prove nothing about TensorRT itself (test_export_trt.py's
GPU tests do, where TensorRT is installed).
"""
import json
import logging
import os

import cv2
import numpy as np
import pytest

from edge.app import config as edge_config
from edge.app.assemble import build_analyzer
from edge.errors import ConfigError, ModelError
from edge.infer.classify.engine import BuildError, failure_path
from edge.infer.classify.sidecar import read_sidecar
from edge.infer.classify.trt import TrtClassifier
from edge.infer.detect import create_detector
from edge.infer.detectors import retinaface_trt
from edge.infer.detectors.retinaface import SHIPPED_MODEL
from edge.infer.samples import shipped_faces

pytest.importorskip("onnxruntime")
FACES = shipped_faces(SHIPPED_MODEL)  # the CC0 kaggle853 crops in models/verify_faces


def scene():
    """A real kaggle853 test scene when the data is here, else a check mosaic of the shipped faces."""
    from conftest import DATA
    path = os.path.join(DATA, "kaggle853", "images", "maksssksksss96.jpg")
    image = cv2.imread(path) if os.path.isfile(path) else None
    return image if image is not None else retinaface_trt.check_frames(FACES, count=1)[0]


@pytest.mark.parametrize("api", [8, 10])
def test_engine_is_built_checked_cached_and_detects_as_onnxruntime(api, tmp_path, monkeypatch, caplog):
    from helpers import FakeCuda, install_fakes
    caplog.set_level(logging.INFO, logger="edge.infer.detectors.retinaface")
    trt = install_fakes(monkeypatch, api)
    cache = str(tmp_path / "engines")
    detector = create_detector("retinaface", confidence=0.3, min_size=8, backend="trt", engine_cache=cache,
                               verify_faces=FACES)
    assert (detector.backend, detector.fallback) == ("trt", None)
    builds = [c for c in trt.calls if c[0] == "build"]
    assert builds == [("build", ["fp16"], ((1, 3, 32, 32), (1, 3, 540, 960), (1, 3, 960, 960)))]
    assert detector.engine_path.endswith(".trt%s.fake-gpu.fp16.s960.engine" % trt.__version__)
    info = read_sidecar(detector.engine_path, "face-detector")
    assert (info["kind"], info["max_side"], info["meta"]["maskgate_model"]) == ("face-detector", 960,
                                                                                  "face-detector")
    assert "TensorRT FP16 vs onnxruntime (face detector): 2 frames" in caplog.text  # checked before caching
    assert "100.00% within 0.05" in caplog.text

    image = scene()
    reference = create_detector("retinaface", confidence=0.3, min_size=8, backend="ort")
    boxes, scores = detector.detect(image)
    expected_boxes, expected_scores = reference.detect(image)
    assert len(boxes) >= 3 and len(boxes) == len(expected_boxes)
    np.testing.assert_allclose(boxes, expected_boxes, atol=1e-3)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-5)
    shapes = [c[1] for c in trt.calls if c[0] == "execute"]
    assert shapes[-1][0] == 1 and max(shapes[-1][2:]) == 960  # the frame scaled to the detector's long side
    assert FakeCuda.depth == 0  # every push popped

    del trt.calls[:]
    again = create_detector("retinaface", backend="trt", engine_cache=cache, verify_faces=FACES)
    assert again.engine_path == detector.engine_path and not [c for c in trt.calls if c[0] == "build"]
    with pytest.raises(ModelError, match="larger than .* was built for \\(960 px\\)"):
        again.session.run(["loc", "conf"], {"input": np.zeros((1, 3, 544, 1280), np.float32)})
    with pytest.raises(ModelError, match="is the engine of a face-detector, not of a classifier"):
        TrtClassifier(detector.engine_path)
    for engine in (detector, again):
        engine.close()
        engine.close()  # twice is harmless
    assert FakeCuda.memory == {} and FakeCuda.detached  # GPU buffers freed, context released


def test_an_engine_that_disagrees_is_deleted_remembered_and_auto_falls_back(tmp_path, monkeypatch, caplog):
    from helpers import install_fakes
    install_fakes(monkeypatch, 8)
    real_run = retinaface_trt.TrtDetectorSession.run

    def drifting(self, names, feeds):  # an engine whose face scores are off by 0.1
        out = real_run(self, names, feeds)
        out[names.index("conf")][..., 1] = np.clip(out[names.index("conf")][..., 1] + 0.1, 0, 1)
        return out
    monkeypatch.setattr(retinaface_trt.TrtDetectorSession, "run", drifting)
    cache = str(tmp_path / "engines")
    with pytest.raises(BuildError, match="disagrees with onnxruntime"):
        create_detector("retinaface", backend="trt", engine_cache=cache, verify_faces=FACES)
    engines = [n for n in os.listdir(cache) if n.endswith(".engine")]
    assert engines == []  # never cached
    failed = [n for n in os.listdir(cache) if n.endswith(".failed")]
    assert len(failed) == 1 and "disagrees" in json.load(open(os.path.join(cache, failed[0])))["error"]

    caplog.set_level(logging.WARNING)
    detector = create_detector("retinaface", backend="auto", engine_cache=cache, verify_faces=FACES)
    assert detector.backend == "ort" and "failed before" in detector.fallback
    assert "falling back to onnxruntime" in caplog.text
    assert len(detector.detect(scene())[0]) >= 3  # and it detects
    assert os.path.isfile(failure_path(os.path.join(cache, failed[0][:-len(".failed")])))


def test_auto_without_tensorrt_is_onnxruntime_and_trt_says_what_to_install(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` fails, as on this machine
    detector = create_detector("retinaface")
    assert (detector.backend, detector.fallback) == ("ort", None)
    with pytest.raises(ModelError, match="TensorRT's Python bindings are not installed"):
        create_detector("retinaface", backend="trt")
    with pytest.raises(ConfigError, match="detector backend 'cuda': accepted auto, trt, ort"):
        create_detector("retinaface", backend="cuda")


def test_config_backend_reaches_the_detector_and_trt_with_another_detector_is_refused(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    config = edge_config.defaults()
    assert config["detector"]["backend"] == "auto"
    config["detector"]["backend"] = "ort"
    analyzer = build_analyzer(config)
    assert analyzer.detector.backend == "ort"
    config["detector"].update(name="haar", backend="trt")
    with pytest.raises(ConfigError, match="detector.backend trt: only the retinaface detector"):
        build_analyzer(config)
    with pytest.raises(ConfigError, match="detector.backend"):
        edge_config.load(overrides={"detector.backend": "tensorrt"})


def test_cli_builds_the_detector_engine(tmp_path, monkeypatch, capsys):
    from export import trt as export_trt
    from helpers import install_fakes
    trt = install_fakes(monkeypatch, 10)
    engine = str(tmp_path / "face_detector.engine")
    assert export_trt.main([SHIPPED_MODEL, "-o", engine, "--max-side", "1280"]) == 0
    out = capsys.readouterr().out
    assert "TensorRT FP16 vs onnxruntime (face detector)" in out and "wrote %s" % engine in out
    assert trt.calls[0] == ("build", ["fp16"], ((1, 3, 32, 32), (1, 3, 720, 1280), (1, 3, 1280, 1280)))
    assert read_sidecar(engine, "face-detector")["max_side"] == 1280


def test_the_engine_path_applies_the_file_s_large_anchor_floor_too(tmp_path, monkeypatch):
    """The floor sits in the decoding both backends share: on a real selfie whose 512 px
    anchors fire on the ceiling, the engine keeps exactly what onnxruntime keeps."""
    from conftest import DATA
    from helpers import install_fakes
    path = os.path.join(DATA, "kaggle853", "images", "maksssksksss405.jpg")
    image = cv2.imread(path)
    if image is None:
        pytest.skip("%s is absent (the shared data set; set MASKGATE_DATA)" % path)
    install_fakes(monkeypatch, 10)
    detector = create_detector("retinaface", confidence=0.3, backend="trt", engine_cache=str(tmp_path),
                               verify_faces=FACES)
    plain = create_detector("retinaface", confidence=0.3, backend="ort", anchor_confidence=None)
    reference = create_detector("retinaface", confidence=0.3, backend="ort")
    assert detector.backend == "trt" and detector.anchor_confidence == reference.anchor_confidence == {512: 0.95}
    boxes, _ = detector.detect(image)
    assert len(boxes) < len(plain.detect(image)[0])  # the floor removed something here
    np.testing.assert_allclose(boxes, reference.detect(image)[0], atol=1e-3)
    detector.close()
