"""The onnxruntime classifier backend on a real exported ONNX model with metadata: shapes,
chunked batches, metadata checks, backend choice; faces cut from real kaggle853 scenes."""
import os
import warnings

import cv2
import numpy as np
import pytest

from conftest import DATA as SHARED_DATA  # ../shared/data, or $MASKGATE_DATA
from conftest import SHIPPED
from edge.errors import ConfigError, ModelError
from edge.infer.analyzer import FaceAnalyzer
from edge.infer.classify.loader import load_classifier, tensorrt_available
from edge.infer.classify.ort import OrtClassifier
from edge.measure.truth import read_voc_file

KAGGLE = os.path.join(SHARED_DATA, "kaggle853")
SIZE = 64


def set_metadata(src, dst, meta):
    """Copy the ONNX ``src`` to ``dst`` with ``meta`` (None: no metadata) as metadata_props."""
    import onnx

    from edge.infer.model_meta import to_string_props
    model = onnx.load(src)
    del model.metadata_props[:]
    for key, value in sorted(to_string_props(meta or {}).items()):
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, dst)
    return dst


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """(path, meta) of a MobileNetV2 (ImageNet features, 2-class head) exported the
    contract's way: opset 13, input "input" with a dynamic batch, softmax output "probs"."""
    torch = pytest.importorskip("torch")
    from edge.infer import model_meta
    from train import models
    from train.weights import cached_path
    folder = tmp_path_factory.mktemp("classifier")
    torch.manual_seed(0)
    net = models.build_model("mobilenet_v2", 2, "imagenet" if cached_path("mobilenet_v2") else "none")
    wrapped = torch.nn.Sequential(net, torch.nn.Softmax(dim=1)).eval()
    mean, std = models.normalization("mobilenet_v2")
    meta = model_meta.make_metadata("mobilenet_v2", ["mask", "no_mask"], (SIZE, SIZE), mean, std, 0.15)
    raw = str(folder / "raw.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(wrapped, (torch.zeros(2, 3, SIZE, SIZE),), raw, dynamo=False, opset_version=13,
                          input_names=["input"], output_names=["probs"],
                          dynamic_axes={"input": {0: "batch"}, "probs": {0: "batch"}})
    return set_metadata(raw, str(folder / "model.onnx"), meta), meta


@pytest.fixture(scope="module")
def faces():
    """(BGR image, annotated xyxy boxes) of two real test-split scenes."""
    if not os.path.isdir(KAGGLE):
        pytest.skip("%s is absent (the shared data set; set MASKGATE_DATA)" % KAGGLE)
    out = []
    for name in ("maksssksksss96", "maksssksksss702"):
        _, boxes, _ = read_voc_file(os.path.join(KAGGLE, "annotations", name + ".xml"))
        out.append((cv2.imread(os.path.join(KAGGLE, "images", name + ".jpg")), np.array(boxes, np.float32)))
    return out


def test_probabilities_for_real_faces(model, faces):
    classifier = load_classifier(model[0], backend="ort")
    assert classifier.backend == "ort" and classifier.classes == ["mask", "no_mask"]
    assert classifier.meta["input_size"] == [SIZE, SIZE]
    image, boxes = faces[0]
    h, w = image.shape[:2]
    outside = np.array([[w + 10, h + 10, w + 50, h + 50]], np.float32)
    analyzer = FaceAnalyzer(None, classifier)
    results = analyzer.classify(image, np.concatenate([boxes, outside]))
    assert len(results) == len(boxes) + 1 and results[-1] is None, "an empty crop: None, rows stay aligned"
    probs = np.stack(results[:-1])
    assert probs.shape == (len(boxes), 2) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5) and np.all(probs >= 0)
    assert analyzer.classify(image, np.zeros((0, 4))) == []
    assert classifier.predict(np.zeros((0, 3, SIZE, SIZE), np.float32)).shape == (0, 2)
    classifier.close()


def test_batches_are_chunked_to_max_batch(model, faces):
    from edge.infer.preprocess import crops_to_batch
    classifier = OrtClassifier(model[0], max_batch=4)
    batch = np.concatenate([crops_to_batch(image, boxes, model[1])[0] for image, boxes in faces])
    assert len(batch) > 8
    calls = []

    class CountingSession(object):
        """The real session, recording the size of every batch it is given."""
        def __init__(self, session):
            self.session = session

        def run(self, outputs, feeds):
            calls.append(len(feeds["input"]))
            return self.session.run(outputs, feeds)

    classifier.session = CountingSession(classifier.session)
    together = classifier.predict(batch)
    assert calls and max(calls) == 4 and len(calls) == -(-len(batch) // 4)
    one_by_one = np.concatenate([classifier.predict(batch[i:i + 1]) for i in range(len(batch))])
    assert np.abs(together - one_by_one).max() < 1e-5
    with pytest.raises(ValueError, match="batch shape"):
        classifier.predict(np.zeros((2, 3, SIZE + 1, SIZE), np.float32))


def test_missing_metadata_is_refused(model, tmp_path):
    bare = set_metadata(model[0], str(tmp_path / "bare.onnx"), None)
    with pytest.raises(ModelError) as err:
        load_classifier(bare, backend="ort")
    assert "metadata" in str(err.value) and "classes" in str(err.value)
    assert "python -m export.onnx" in str(err.value)


def test_broken_metadata_is_refused(model, tmp_path):
    broken = set_metadata(model[0], str(tmp_path / "broken.onnx"), dict(model[1], classes=["mask", "cat"]))
    with pytest.raises(ModelError, match="classes"):
        load_classifier(broken, backend="ort")


@pytest.mark.parametrize("change, words", [
    ({"input_size": [96, 96]}, "input_size"),
    ({"classes": ["mask", "no_mask", "incorrect"]}, "3 classes"),
])
def test_metadata_that_does_not_match_the_graph_is_refused(model, tmp_path, change, words):
    wrong = set_metadata(model[0], str(tmp_path / "wrong.onnx"), dict(model[1], **change))
    with pytest.raises(ModelError) as err:
        load_classifier(wrong, backend="ort")
    assert words in str(err.value) and "do not match" in str(err.value)


def test_backend_choice_and_errors(model, tmp_path):
    if tensorrt_available():
        pytest.skip("tensorrt is installed here: auto picks it")
    classifier = load_classifier(model[0])  # auto
    assert classifier.backend == "ort" and classifier.max_batch == 16
    assert "CPUExecutionProvider" in classifier.providers
    with pytest.raises(ModelError) as err:
        load_classifier(model[0], backend="trt")
    assert "TensorRT" in str(err.value) and "install" in str(err.value)
    with pytest.raises(ConfigError, match="auto, trt, ort"):
        load_classifier(model[0], backend="tensorflow")
    with pytest.raises(ModelError, match="not found"):
        load_classifier(str(tmp_path / "absent.onnx"))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load"):
        load_classifier(str(garbage), backend="ort")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"x")
    with pytest.raises(ModelError, match="TensorRT engine"):
        load_classifier(str(engine), backend="ort")




def test_shipped_model_labels_detected_faces_of_real_scenes():
    """Detection + classification on real test-split scenes against their annotations."""
    if not os.path.isfile(SHIPPED):
        pytest.skip("models/mask_classifier.onnx is not there yet (make train)")
    if not os.path.isdir(KAGGLE):
        pytest.skip("%s is absent (the shared data set; set MASKGATE_DATA)" % KAGGLE)
    from edge.infer.detect import create_detector
    try:
        detector = create_detector("retinaface", confidence=0.3)
    except ModelError as exc:
        pytest.skip(str(exc))
    classifier = load_classifier(SHIPPED)
    assert classifier.backend == "ort"
    right = total = 0
    for name in ("maksssksksss96", "maksssksksss249", "maksssksksss347", "maksssksksss665",
                 "maksssksksss698", "maksssksksss702", "maksssksksss760"):
        image = cv2.imread(os.path.join(KAGGLE, "images", name + ".jpg"))
        _, boxes, labels = read_voc_file(os.path.join(KAGGLE, "annotations", name + ".xml"))
        truth = list(zip(labels, boxes))
        faces = FaceAnalyzer(detector, classifier).analyze(image)
        boxes = [f.box for f in faces]
        probs = np.stack([f.probs for f in faces])
        assert np.allclose(probs.sum(axis=1), 1, atol=1e-4)
        for label, box in truth:
            if label not in classifier.classes or max(box[2] - box[0], box[3] - box[1]) < 24:
                continue
            ious = [_iou(box, b) for b in boxes]
            if ious and max(ious) >= 0.5:
                total += 1
                right += classifier.classes[int(np.argmax(probs[int(np.argmax(ious))]))] == label
    assert total >= 25
    assert right >= 0.8 * total, "%d of %d detected faces labelled as annotated" % (right, total)


def _iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_auto_builds_and_uses_a_tensorrt_engine_where_tensorrt_imports(model, faces, tmp_path, monkeypatch):
    """The trt path's control flow (engine cache, TrtClassifier) with the export tests'
    TensorRT stand-in, which runs the engine's bytes in onnxruntime: no GPU here."""
    from edge.infer.preprocess import crops_to_batch
    from helpers import install_fakes
    reference = OrtClassifier(model[0])
    batch = crops_to_batch(faces[1][0], faces[1][1], model[1])[0]
    install_fakes(monkeypatch, 10)
    classifier = load_classifier(model[0], max_batch=4, engine_cache=str(tmp_path))
    assert classifier.backend == "trt" and classifier.max_batch == 4
    assert classifier.classes == reference.classes
    assert np.abs(classifier.predict(batch) - reference.predict(batch)).max() < 1e-5
    classifier.close()
    engines = [f for f in os.listdir(str(tmp_path)) if f.endswith(".engine")]
    assert len(engines) == 1
    again = load_classifier(str(tmp_path / engines[0]), backend="auto")
    assert again.backend == "trt"
    again.close()
