"""The one contract train and edge share: metadata keys and preprocessing, pinned equal."""
import os

import cv2
import numpy as np
import pytest

from conftest import ROOT, data_path
from edge import model_meta, preprocess
from train import data, metadata, transforms

SHIPPED = os.path.join(ROOT, "models", "mask_classifier.onnx")


def test_metadata_lists_are_the_same_on_both_sides():
    assert metadata.REQUIRED_KEYS == model_meta.REQUIRED_KEYS
    assert metadata.CLASS_NAMES == model_meta.CLASS_NAMES
    assert metadata.RESIZE_MODES == model_meta.RESIZE_MODES


@pytest.mark.parametrize("broken", [
    {"classes": ["mask"]}, {"classes": ["mask", "beard"]}, {"input_size": [4, 4]},
    {"resize": "stretch"}, {"std": [0, 1, 1]}, {"crop_margin": 1.5}, {"color": "BGR"},
])
def test_both_sides_reject_the_same_broken_metadata(broken):
    good = metadata.make_metadata("mobilenet_v2", ["mask", "no_mask"], (96, 96), (0.5,) * 3, (0.5,) * 3, 0.15)
    bad = dict(good, **broken)
    with pytest.raises(metadata.MetadataError):
        metadata.validate(bad)
    with pytest.raises(model_meta.MetadataError):
        model_meta.validate(bad)
    props = metadata.to_string_props(good)
    assert model_meta.from_string_props(props) == metadata.from_string_props(props) == good


def test_letterbox_and_box_margin_are_identical_code_paths():
    rng = np.random.default_rng(0)
    for h, w, size in [(37, 23, (96, 96)), (300, 500, (64, 64)), (20, 20, (128, 128)), (50, 80, (96, 64))]:
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        mean = (0.485, 0.456, 0.406)
        assert np.array_equal(transforms.letterbox(rgb, size, mean), preprocess.letterbox(rgb, size, mean))
    for box in [(10.4, 20.6, 50.5, 80.2), (0, 0, 640, 480), (-5, 3, 30, 500)]:
        assert transforms.expand_box(box, 0.15, 640, 480) == preprocess.expand_box(box, 0.15, 640, 480)


def test_same_real_faces_get_the_same_probabilities_in_train_and_edge():
    from edge.classify import load_classifier
    classifier = load_classifier(SHIPPED, backend="ort")
    meta = classifier.meta
    root = data_path("kaggle853")
    faces = [s for s in data.read_voc(root) if s.split == "test" and s.label in meta["classes"]][:40]
    by_image = {}
    for s in faces:
        by_image.setdefault(s.path, []).append(s.box)
    train_batch, edge_batch = [], []
    for path, boxes in sorted(by_image.items()):
        rgb = data.read_rgb(path)  # train decodes with PIL
        for box in boxes:
            x1, y1, x2, y2 = transforms.expand_box(box, meta["crop_margin"], rgb.shape[1], rgb.shape[0])
            train_batch.append(transforms.eval_transform(rgb[y1:y2, x1:x2], meta).numpy())
        batch, kept = preprocess.crops_to_batch(cv2.imread(path), boxes, meta)  # edge: OpenCV, BGR
        assert kept == list(range(len(boxes)))
        edge_batch.extend(batch)
    train_batch, edge_batch = np.stack(train_batch), np.stack(edge_batch)
    assert len(train_batch) == 40
    # JPEG decoders may differ by a grey level or so; the inputs agree to that.
    assert np.abs(train_batch - edge_batch).max() < 0.1
    train_probs, edge_probs = classifier.predict(train_batch), classifier.predict(edge_batch)
    assert np.abs(train_probs - edge_probs).max() <= 0.01
    assert (train_probs.argmax(1) == edge_probs.argmax(1)).all()
