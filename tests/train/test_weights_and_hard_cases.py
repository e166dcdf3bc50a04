"""The training loss with sample weights, the compliance view, and the hard cases drawn on real faces."""
import glob
import os

import cv2
import numpy as np
import pytest

from conftest import ROOT
from edge.infer.preprocess import letterbox
from train import augment, report

torch = pytest.importorskip("torch")


def test_unit_weights_give_exactly_the_class_weighted_cross_entropy():
    from train.engine import class_weights, weighted_loss
    torch.manual_seed(0)
    logits, targets = torch.randn(12, 3), torch.tensor([0, 1, 2, 0, 0, 1, 2, 2, 0, 1, 0, 0])
    cw = class_weights(targets.numpy(), 3)
    expected = torch.nn.CrossEntropyLoss(weight=cw)(logits, targets)
    per = torch.nn.CrossEntropyLoss(weight=cw, reduction="none")(logits, targets)
    assert weighted_loss(per, targets, torch.ones(12), cw).item() == pytest.approx(expected.item(), rel=1e-6)
    # Doubling one sample's weight is the same as having it twice in the batch.
    twice = torch.cat([logits, logits[:1]]), torch.cat([targets, targets[:1]])
    expected = torch.nn.CrossEntropyLoss(weight=cw)(*twice)
    weights = torch.ones(12)
    weights[0] = 2.0
    assert weighted_loss(per, targets, weights, cw).item() == pytest.approx(expected.item(), rel=1e-6)
    # Class weights from summed sample weights: two half-weight copies count as one face.
    assert torch.allclose(class_weights([0, 0, 1], 2, [0.5, 0.5, 1.0]), torch.tensor([1.0, 1.0]))


def test_compliance_view_counts_a_worn_wrong_mask_against_compliance():
    classes = ["mask", "no_mask"]  # a two-class model meets three-class truth
    names = ["mask", "mask", "no_mask", "incorrect", "incorrect"]
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.7, 0.3], [0.1, 0.9]])
    view = report.compliance_metrics(names, probs, classes)
    assert view["positives"] == 3 and view["recall"] == pytest.approx(2 / 3.0)
    assert view["precision"] == pytest.approx(2 / 3.0)  # one mask face called non-compliant
    assert view["by_label"]["incorrect"] == {"n": 2, "called_non_compliant": 1}
    assert view["auc"] == pytest.approx(5 / 6.0)  # of the 6 (non-compliant, mask) pairs, 5 ordered right
    assert report.compliance_metrics(names, probs[:, ::-1], ["no_mask", "incorrect"]) is None
    # At a threshold the view counts what the service would call: 1 - P(mask) >= 0.25.
    low = report.compliance_metrics(names, probs, classes, threshold=0.25)
    assert low["recall"] == 1.0 and low["by_label"]["mask"]["called_non_compliant"] == 1
    points = report.operating_points(names, probs, classes, thresholds=(None, 0.25, 0.05))
    assert [(p["non_compliant_caught"], p["masks_called"]) for p in points] == [(2, 1), (3, 1), (3, 2)]


@pytest.fixture(scope="module")
def crops():
    paths = sorted(glob.glob(os.path.join(ROOT, "models", "verify_faces", "no_mask_*.jpg")))[:6]
    return [letterbox(cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB), (96, 96), (0.485, 0.456, 0.406))
            for p in paths]


def _changed(before, after):
    return np.any(before != after, axis=2)


def test_hard_cases_draw_where_they_should_and_are_seeded(crops):
    for i, crop in enumerate(crops):
        rng = np.random.default_rng(i)
        occluded = augment.occluder(crop, rng)
        changed = _changed(crop, occluded)
        rows = np.nonzero(changed.any(axis=1))[0]
        assert changed.mean() > 0.02 and rows.mean() > 0.5 * crop.shape[0]  # below the eyes, before the mouth
        glasses = _changed(crop, augment.sunglasses(crop, rng))
        rows = np.nonzero(glasses.any(axis=1))[0]
        assert glasses.mean() > 0.01 and rows.max() < 0.6 * crop.shape[0]  # the upper face only
        blurred = augment.blur(crop, rng)
        assert blurred.shape == crop.shape and np.abs(np.diff(blurred.astype(float), axis=1)).mean() <= \
            np.abs(np.diff(crop.astype(float), axis=1)).mean()
        assert np.array_equal(crop, crops[i])  # the input itself is never drawn on
    a = augment.hard_cases(crops[0], np.random.default_rng(7), {"occluders": 1.0, "sunglasses": 1.0})
    b = augment.hard_cases(crops[0], np.random.default_rng(7), {"occluders": 1.0, "sunglasses": 1.0})
    assert np.array_equal(a, b) and not np.array_equal(a, crops[0])
    assert augment.hard_cases(crops[0], np.random.default_rng(7), {}) is crops[0]


def test_the_hard_case_bench_draws_every_training_case_seeded(crops):
    import sys
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import hard_cases
    # Every case the training draws, low resolution included, is measured by the bench.
    assert hard_cases.CASES == ("clean", "occluders", "sunglasses", "blur", "lowres")
    small, again = (hard_cases.lowres(crops[0], np.random.default_rng(3)) for _ in range(2))
    assert small.shape == crops[0].shape and np.array_equal(small, again)
    sharpness = lambda image: np.abs(np.diff(image.astype(float), axis=1)).mean()  # noqa: E731
    assert sharpness(small) < 0.9 * sharpness(crops[0])  # a 12-32 px face has lost its detail


def test_a_two_class_checkpoint_grows_a_third_class_without_forgetting(tmp_path):
    from helpers import SIZE, make_checkpoint, real_faces
    from train import checkpoint, models, transforms
    path = make_checkpoint(str(tmp_path / "two.pt"), steps=3)
    two, meta = checkpoint.load_model(path)
    three = models.build_model("mobilenet_v2", 3, path, ["mask", "no_mask", "incorrect"])
    three.eval()
    x = torch.stack([transforms.eval_transform(rgb, meta) for rgb, _ in real_faces()[:8]])
    assert meta["input_size"] == [SIZE, SIZE]
    with torch.no_grad():
        old, new = two(x), three(x)
    # The rows of the classes both know are the trained ones; the new class starts fresh.
    assert torch.allclose(new[:, :2], old, atol=1e-5)
    assert not torch.allclose(new[:, 2], new[:, 0])
    # Named, not positional: the same checkpoint behind an order that swaps the two classes.
    swapped = models.build_model("mobilenet_v2", 3, path, ["no_mask", "incorrect", "mask"])
    swapped.eval()
    with torch.no_grad():
        assert torch.allclose(swapped(x)[:, [2, 0]], old, atol=1e-5)
    # Without class names the head stays new, as before.
    plain = models.build_model("mobilenet_v2", 3, path)
    plain.eval()
    with torch.no_grad():
        assert not torch.allclose(plain(x)[:, :2], old, atol=1e-3)


def test_reframing_keeps_the_models_crop_and_draws_other_framings():
    from conftest import data_path
    from train import data, transforms
    from train.engine import FaceDataset
    scenes = {"maksssksksss0.jpg", "maksssksksss1.jpg", "maksssksksss10.jpg"}
    samples = [s for s in data.read_voc(data_path("kaggle853")) if os.path.basename(s.path) in scenes]
    assert len(samples) >= 5
    meta = {"input_size": [64, 64], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
            "crop_margin": 0.15}
    classes = ["mask", "no_mask", "incorrect"]
    reframing = transforms.TrainTransform(meta, framing=1.0)
    plain = FaceDataset(samples, classes, meta, transforms.TrainTransform(meta))
    with_context = FaceDataset(samples, classes, meta, reframing)
    for i, sample in enumerate(samples):
        # The model's crop (validation, k-fold's held-out fold) is exactly the one cut from the scene.
        assert np.array_equal(with_context.boxed(i), plain.boxed(i))
        context = with_context._entry(i)
        assert isinstance(context, transforms.SceneContext)
        x1, y1, x2, y2 = context.box
        assert context.rgb.shape[1] >= x2 - x1 and context.rgb.shape[0] >= y2 - y1
    # frame(): no margin is the box itself; each side's margin moves only that side.
    context = with_context._entry(0)
    x1, y1, x2, y2 = [int(round(v)) for v in context.box]
    assert transforms.frame(context.rgb, context.box, (0, 0, 0, 0)).shape[:2] == (y2 - y1, x2 - x1)
    wider = transforms.frame(context.rgb, context.box, (0, 0, 0.3, 0))
    assert wider.shape[0] == y2 - y1 and wider.shape[1] > x2 - x1
    # Re-framed crops differ from one draw to the next, and are seeded from torch.
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    first = [reframing.from_context(context) for _ in range(3)]
    torch.manual_seed(0)
    again = [reframing.from_context(context) for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], first[1])
    assert with_context[0][0].shape == (3, 64, 64)
