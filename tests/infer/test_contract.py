"""The one contract train and edge share: the metadata and the preprocessing.

Both are defined once on the device side (``edge.infer.model_meta``, ``edge.infer.preprocess``)
and train reads them; what can still differ is the decoding (PIL in train, OpenCV on the
device), which the real-face test below measures.
"""

import cv2
import numpy as np
import pytest

from conftest import SHIPPED, data_path
from edge.infer import model_meta, preprocess
from train import data, transforms
from train.images import read_rgb


@pytest.mark.parametrize("broken", [
    {"classes": ["mask"]}, {"classes": ["mask", "beard"]}, {"input_size": [4, 4]},
    {"resize": "stretch"}, {"std": [0, 1, 1]}, {"crop_margin": 1.5}, {"color": "BGR"},
])
def test_broken_metadata_is_refused_and_good_metadata_round_trips(broken):
    good = model_meta.make_metadata("mobilenet_v2", ["mask", "no_mask"], (96, 96), (0.5,) * 3, (0.5,) * 3, 0.15)
    with pytest.raises(model_meta.MetadataError):
        model_meta.validate(dict(good, **broken))
    assert model_meta.from_string_props(model_meta.to_string_props(good)) == good


def test_same_real_faces_get_the_same_probabilities_in_train_and_edge():
    from edge.infer.classify.loader import load_classifier
    classifier = load_classifier(SHIPPED, backend="ort")
    meta = classifier.meta
    root = data_path("kaggle853")
    faces = [s for s in data.read_voc(root) if s.split == "test" and s.label in meta["classes"]][:40]
    by_image = {}
    for s in faces:
        by_image.setdefault(s.path, []).append(s.box)
    train_batch, edge_batch = [], []
    for path, boxes in sorted(by_image.items()):
        rgb = read_rgb(path)  # train decodes with PIL
        for box in boxes:
            x1, y1, x2, y2 = preprocess.expand_box(box, meta["crop_margin"], rgb.shape[1], rgb.shape[0])
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
