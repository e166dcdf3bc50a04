"""The detector fine-tuning package: ONNX parity, loss, data hygiene, a short real run, export.

Real scenes come from the shared data (kaggle853); the starting weights are the provisioned
RetinaFace ONNX file (``make models``). Each test skips with the reason when either is absent.
"""
import json
import os
import shutil
import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest
import torch

from conftest import data_path
from edge.infer.detectors.retinaface import BOX_ADJUST, SHIPPED_MODEL
from train.detector import boxstyle
from train.detector.anchors import anchor_boxes, anchor_xyxy, encode, match
from train.detector.augment import TrainAugment, preprocess
from train.detector.data import TrainScenes, collate, load_scene_set, load_sets
from train.detector.evaluate import format_scores
from train.detector.loss import MultiBoxLoss, build_targets
from train.detector.net import WithSoftmax, freeze_for_finetuning, load_from_onnx

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def kaggle():
    return data_path("kaggle853")


@pytest.fixture(scope="module")
def scenes(kaggle):
    split, hygiene, _ = load_scene_set(kaggle)
    return split


def ort_outputs(path, blob):
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(["loc", "conf", "landmarks"], {"input": blob})


@pytest.mark.parametrize("which", ["original", "shipped"])
def test_pytorch_network_reproduces_the_onnx_outputs_on_a_real_scene(which, wider_onnx, scenes):
    # The original WIDER FACE file starts training; the shipped fine-tuned export (whose
    # graph wraps the network in WithSoftmax) can start it too, for a site's own scenes.
    path = SHIPPED_MODEL if which == "shipped" else wider_onnx
    net = WithSoftmax(load_from_onnx(path)).eval()
    image = cv2.imread(scenes["val"][0].path)
    blob = preprocess(image)
    want = ort_outputs(path, blob)
    with torch.no_grad():
        got = [t.numpy() for t in net(torch.from_numpy(blob))]
    for name, g, w in zip(("loc", "conf", "landmarks"), got, want):
        assert g.shape == w.shape, name
        assert np.abs(g - w).max() < 1e-4, name
    assert (want[1][0, :, 1] > 0.5).sum() >= 1  # the scene has faces: a meaningful comparison


def test_a_face_exactly_on_an_anchor_has_a_zero_regression_target():
    anchors = anchor_boxes(64, 64)
    k = 5  # a 16 px anchor of the stride-8 level
    gt = anchor_xyxy(anchors[k:k + 1]).clone()
    labels, targets = match(gt, anchors)
    assert labels[k] == 1
    assert torch.allclose(targets[k], torch.zeros(4), atol=1e-6)
    assert torch.allclose(encode(gt, anchors[k:k + 1]), torch.zeros(1, 4), atol=1e-6)
    # A network predicting no offset there has no box loss from it.
    only_k = torch.zeros_like(labels)
    only_k[k] = 1
    loc = torch.zeros(1, len(anchors), 4)
    conf = torch.zeros(1, len(anchors), 2)
    _, box_term, _ = MultiBoxLoss()(loc, conf, only_k[None], targets[None])
    assert float(box_term) == 0.0
    # Its neighbours one stride away overlap it by 0.6: positive too, with non-zero targets.
    assert int((labels == 1).sum()) > 1 and float(targets[labels == 1].abs().sum()) > 0


def test_each_face_gets_its_best_anchor_even_below_the_positive_threshold():
    anchors = anchor_boxes(64, 64)
    gt = torch.tensor([[20.0, 20.0, 30.0, 31.0]])  # a 10 px face: IoU < 0.35 with every 16 px anchor
    labels, _ = match(gt, anchors)
    assert int((labels == 1).sum()) == 1


def test_an_image_without_faces_gives_only_negatives_and_no_box_loss():
    anchors = anchor_boxes(64, 64)
    labels, targets = build_targets([torch.zeros(0, 4)], [torch.zeros(0, 4)], anchors)
    assert (labels == 0).all() and (targets == 0).all()
    loc = torch.randn(1, len(anchors), 4, requires_grad=True)
    conf = torch.randn(1, len(anchors), 2, requires_grad=True)
    criterion = MultiBoxLoss(min_negatives=8)
    total, box_term, cls_term = criterion(loc, conf, labels, targets)
    assert float(box_term.detach()) == 0.0 and float(cls_term.detach()) > 0
    assert int(criterion.hard_negatives(conf[..., 1].detach(), labels).sum()) == 8
    total.backward()
    assert float(loc.grad.abs().sum()) == 0.0


def test_ignore_regions_are_neither_positive_nor_negative():
    anchors = anchor_boxes(64, 64)
    ignore = torch.tensor([[8.0, 8.0, 24.0, 24.0]])
    labels, _ = match(torch.zeros(0, 4), anchors, ignore)
    assert (labels == -1).sum() >= 1 and (labels == 1).sum() == 0


def test_box_adjustments_invert_and_compose_like_the_edge():
    boxes = np.array([[10, 20, 50, 80]], np.float32)
    wh = np.tile(boxes[:, 2:] - boxes[:, :2], 2)
    assert np.allclose(boxstyle.apply(boxes, BOX_ADJUST), boxes + wh * np.array(BOX_ADJUST, np.float32))
    back = boxstyle.apply(boxstyle.apply(boxes, BOX_ADJUST), boxstyle.invert(BOX_ADJUST))
    assert np.allclose(back, boxes, atol=1e-4)
    other = (-0.15, -0.2, 0.1, 0.1)
    both = boxstyle.apply(boxstyle.apply(boxes, BOX_ADJUST), other)
    assert np.allclose(boxstyle.apply(boxes, boxstyle.compose(BOX_ADJUST, other)), both, atol=1e-3)


def test_augmented_boxes_stay_on_their_faces():
    image = np.full((300, 400, 3), 120, np.uint8)
    box = np.array([[150, 100, 190, 150]], np.float32)
    image[100:150, 150:190] = 255
    augment = TrainAugment(size=256, infer_size=400, p_blur=0, p_occlude=0, p_photometric=0, p_face_centred=1)
    import random
    for seed in range(10):
        out, faces, _ = augment(image, box, np.zeros((0, 4), np.float32), random.Random(seed))
        for x0, y0, x1, y1 in faces.round().astype(int):
            inner = out[y0 + 1:y1 - 1, x0 + 1:x1 - 1]
            assert inner.size and inner.mean() > 240  # the box still frames the white "face"


def test_large_face_crops_zoom_onto_a_real_face(scenes):
    """--large-faces: the crop is zoomed so that a face of 32 px or more in the scene is 128 to
    7/8 of the crop across, its box still on the same pixels (those of the scene, resized); a
    scene whose faces are all smaller gets the ordinary crop."""
    import random

    from train.detector.augment import LARGE_FACE_MIN, LARGE_FRACTION
    augment = TrainAugment(size=320, infer_size=960, p_blur=0, p_occlude=0, p_photometric=0, p_large=1.0)
    scene = next(s for s in scenes["train"]  # one face: the zoom has only it to choose
                 if len(s.boxes) == 1 and (s.boxes[0, 2:] - s.boxes[0, :2]).max() >= 48)
    image = cv2.imread(scene.path)
    fx0, fy0, fx1, fy1 = scene.boxes[0].astype(int)
    sides = []
    for seed in range(6):
        rng = random.Random(seed)
        out, faces, _ = augment(image, scene.boxes, np.zeros((0, 4), np.float32), rng)
        assert out.shape == (320, 320, 3) and len(faces)
        side = (faces[:, 2:] - faces[:, :2]).max(axis=1)
        big = int(np.argmax(side))
        sides.append(float(side[big]))
        assert LARGE_FACE_MIN - 1 <= side[big] <= LARGE_FRACTION * 320 + 1
        # Its pixels are the scene's face, resized (and mirrored when the crop was flipped):
        # the face cut from the scene is found in the crop where its box says.
        x0, y0, x1, y1 = faces[big].round().astype(int)
        face = image[fy0:fy1, fx0:fx1]
        best = min(cv2.minMaxLoc(cv2.matchTemplate(out, cv2.resize(np.ascontiguousarray(f), (x1 - x0, y1 - y0)),
                                                   cv2.TM_SQDIFF_NORMED))[::2]
                   for f in (face, face[:, ::-1]))
        assert best[0] < 0.01 and best[1] == pytest.approx((x0, y0), abs=2)
    assert max(sides) / min(sides) > 1.3  # the zoom is drawn, not fixed
    tiny = np.array([[10, 10, 30, 28]], np.float32)  # 20 px: nothing to zoom onto
    out, faces, _ = augment(image, tiny, np.zeros((0, 4), np.float32), random.Random(0))
    ordinary, same, _ = TrainAugment(size=320, infer_size=960, p_blur=0, p_occlude=0, p_photometric=0)(
        image, tiny, np.zeros((0, 4), np.float32), random.Random(0))
    assert np.array_equal(out, ordinary) and np.array_equal(faces, same)


def _write_voc(path, image_name, boxes):
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = image_name
    for box in boxes:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = "with_mask"
        bb = ET.SubElement(obj, "bndbox")
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), box):
            ET.SubElement(bb, key).text = str(value)
    ET.ElementTree(root).write(path)


def test_empty_annotations_and_boxes_outside_the_image_are_counted_and_skipped(tmp_path, scenes):
    real = scenes["train"][:4]
    folder = tmp_path / "mini"
    (folder / "images").mkdir(parents=True)
    (folder / "annotations").mkdir()
    rows = ["image,split"]
    cases = {"ok": real[0].boxes.tolist(), "empty": [],
             "outside": [[10, 10, real[2].width + 40, 60]],
             "edge": [[5, 5, real[3].width + 1, 40]]}  # 1 px past the border: clipped, kept
    for (name, boxes), scene in zip(cases.items(), real):
        shutil.copy(scene.path, str(folder / "images" / (name + ".jpg")))
        _write_voc(str(folder / "annotations" / (name + ".xml")), name + ".jpg", boxes)
        rows.append("%s.jpg,%s" % (name, "train"))
    shutil.copy(real[0].path, str(folder / "images" / "copy.jpg"))  # a val scene copying a train one
    _write_voc(str(folder / "annotations" / "copy.xml"), "copy.jpg", cases["ok"])
    rows.append("copy.jpg,val")
    (folder / "splits.csv").write_text("\n".join(rows) + "\n")
    split, hygiene, _ = load_scene_set(str(folder))
    assert hygiene["skipped: empty annotation"] == 1
    assert hygiene["skipped: box outside the image"] == 1
    assert sorted(s.key for s in split["train"]) == ["mini/edge.jpg", "mini/ok.jpg"]
    edge = [s for s in split["train"] if s.key == "mini/edge.jpg"][0]
    assert edge.boxes[0, 2] == edge.width
    sets, summary = load_sets([str(folder)])
    assert [s.key for s in sets["mini"]["train"]] == ["mini/edge.jpg"]  # the near-copy of val is out
    assert summary["mini"]["near_copies_dropped_from_train"] == [["mini/ok.jpg", "mini/copy.jpg"]]


def test_a_short_run_on_real_scenes_lowers_the_loss(wider_onnx, scenes):
    torch.manual_seed(0)
    train = [s for s in scenes["train"] if len(s.boxes)][:4]
    data = TrainScenes(train, TrainAugment(size=192, infer_size=400), {"kaggle853": boxstyle.invert(BOX_ADJUST)})
    images, boxes, ignore = collate([data[i] for i in range(len(data))])  # one fixed batch
    anchors = anchor_boxes(192, 192)
    labels, targets = build_targets(boxes, ignore, anchors)
    net = freeze_for_finetuning(load_from_onnx(wider_onnx))
    criterion = MultiBoxLoss()
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=3e-4)
    landmarks_before = net.landmark_head.landmark_head[0].weight.clone()
    losses = []
    net.train()
    for _ in range(6):
        loc, conf, _ = net(images)
        loss, _, _ = criterion(loc, conf, labels, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses
    assert torch.equal(net.landmark_head.landmark_head[0].weight, landmarks_before)  # frozen


def test_export_runs_in_the_edge_and_matches_pytorch(wider_onnx, scenes, tmp_path):
    import onnx

    from edge.infer.detectors.retinaface import RetinaFaceDetector, WiderRetinaFaceDetector
    from train.detector import checkpoint
    from train.detector.export import export
    net = load_from_onnx(wider_onnx)
    meta = checkpoint.describe(wider_onnx, "common", {"kaggle853": BOX_ADJUST},
                               {"kaggle853": {"folder": "x", "licence": "CC0-1.0", "scenes": {}, "faces": {}}},
                               {"data": ["x/kaggle853"], "out": "/home/someone/runs/det"}, 256, ["kaggle853"])
    meta["operating_point"] = {"fp_budget": 1.0, "confidence": 0.42, "recall_at_budget": 0.9}
    ckpt = str(tmp_path / "best.pt")
    checkpoint.save(ckpt, net, meta, epoch=0)
    image = cv2.imread(scenes["val"][1].path)
    blobs = [preprocess(image), preprocess(cv2.resize(image, (320, 240)))]
    blobs.append(np.concatenate([blobs[1], blobs[1][:, :, :, ::-1]], axis=0).copy())  # batch of 2
    path, worst, n = export(ckpt, str(tmp_path / "out"), blobs)
    assert n == 3 and max(worst.values()) < 1e-4
    model = onnx.load(path)
    assert model.opset_import[0].version == 13
    assert [o.name for o in model.graph.output] == ["loc", "conf", "landmarks"]
    props = dict((p.key, p.value) for p in model.metadata_props)
    for key in ("arch", "mean_bgr", "anchors", "variances", "box_convention", "training_data", "licences"):
        assert props.get(key), key
    assert "CC0" in props["licences"]
    assert json.loads(props["train_args"])["out"] == "det"  # no training machine's folders in a shipped file
    assert json.loads(props["operating_point"])["confidence"] == 0.42  # the edge's default confidence for it
    assert RetinaFaceDetector(None, model=path, confidence=None).confidence == 0.42
    # The edge's detector runs the exported file unchanged: same faces as the original.
    assert os.path.basename(path) == "face_detector.onnx"
    new = RetinaFaceDetector(None, model=path, input_size=480, confidence=0.3, min_size=8)
    old = WiderRetinaFaceDetector(os.path.dirname(wider_onnx), input_size=480, confidence=0.3, min_size=8)
    assert np.array_equal(new.box_adjust, old.box_adjust)  # "common" framing: the metadata asks for BOX_ADJUST
    (b_new, s_new), (b_old, s_old) = new.detect(image), old.detect(image)
    assert len(s_new) == len(s_old) >= 1
    assert np.abs(b_new - b_old).max() < 1e-2 and np.abs(s_new - s_old).max() < 1e-4


@pytest.mark.slow
def test_the_command_line_trains_selects_resumes_and_describes_its_checkpoint(wider_onnx, kaggle, tmp_path):
    from train.detector import checkpoint
    from train.detector.__main__ import main
    out = str(tmp_path / "run")
    common = ["--data", kaggle, "--out", out, "--limit", "3", "--input-size", "160", "--batch-size", "3",
              "--threads", "2", "--init", wider_onnx, "--cache-dir", str(tmp_path / "cache")]
    main(common + ["--epochs", "1"])
    main(common + ["--epochs", "2", "--resume", os.path.join(out, "last.pt")])
    last = checkpoint.read(os.path.join(out, "last.pt"))
    assert last["epoch"] == 2 and [h["epoch"] for h in last["history"]] == [0, 1, 2]
    net, meta = checkpoint.load_net(os.path.join(out, "best.pt"))
    assert meta["input"]["mean_bgr"] == [104.0, 117.0, 127.0]
    assert meta["anchors"]["min_sizes"] == [[16, 32], [64, 128], [256, 512]]
    assert meta["training_data"]["kaggle853"]["licence"].startswith("CC0")
    assert meta["training_data"]["kaggle853"]["scenes"]["train"] == 3  # --limit is recorded
    assert set(meta["metrics"]["test"]["kaggle853"]) >= {"ap50", "ap30", "recall50", "recall_small50", "fp_per_image"}
    assert os.path.isfile(os.path.join(out, "metrics.json"))
    assert meta["selection"]["metric"] == "recall_at_budget" and meta["selection"]["fp_budget"] == 1.0
    point = meta["operating_point"]
    assert set(point["per_set"]) == {"kaggle853"} and point["confidence"] >= 0.3
    assert last["best"]["metric"] == "recall_at_budget"
    assert "recall_at_budget" in meta["metrics"]["test"]["kaggle853"]


def test_training_can_go_on_from_the_shipped_detector(wider_onnx, kaggle, tmp_path):
    # A site fine-tunes the shipped masked-crowd detector on its own scenes: --init takes our
    # own export, while each source's framing is still measured by the WIDER original.
    from train.detector import checkpoint
    from train.detector.__main__ import main
    out = str(tmp_path / "run")
    main(["--data", kaggle, "--out", out, "--limit", "3", "--input-size", "160", "--batch-size", "3",
          "--threads", "2", "--epochs", "1", "--init", SHIPPED_MODEL, "--original", os.path.dirname(wider_onnx),
          "--cache-dir", str(tmp_path / "cache")])
    last = checkpoint.read(os.path.join(out, "last.pt"))
    assert last["meta"]["init"]["onnx"] == "face_detector.onnx"
    trained = last["model_state"]

    def distance(state):
        return max((trained[k] - v).abs().max().item() for k, v in state.items())
    # One step moves the weights by about the learning rate; the shipped file and the WIDER
    # original differ by 0.07 somewhere: training started from the shipped one.
    assert 0 < distance(load_from_onnx(SHIPPED_MODEL).state_dict()) < 0.01
    assert distance(load_from_onnx(wider_onnx).state_dict()) > 0.05


def _box(i):
    """A 20 px face box, the i-th along a row (no two overlap)."""
    return [40 * i, 0, 40 * i + 20, 20]


def _two_images(floor=0.3):
    """Two images, four faces; ranked by score: 0.9 hit, 0.8 false, 0.7 hit, 0.6 false,
    0.5 false, 0.4 hit (one face, image b's second, is never found)."""
    from train.detector.evaluate import FaceScores
    scores = FaceScores(floor)
    scores.add([_box(0), _box(1)], [_box(0), _box(5), _box(1)], [0.9, 0.8, 0.4])
    scores.add([_box(0), _box(1)], [_box(0), _box(6), _box(7)], [0.7, 0.6, 0.5])
    return scores


@pytest.mark.parametrize("budget, recall, threshold", [
    (0.0, 0.25, 0.9),   # only the top detection: a second one is false
    (0.5, 0.5, 0.7),    # one false positive in two images allowed: down to 0.7
    (1.0, 0.5, 0.6),    # two: down to 0.6; 0.5 would be the third
    (1.5, 0.75, 0.3),   # all three false positives fit: the floor, everything seen
    (10.0, 0.75, 0.3),
])
def test_recall_at_a_false_positive_budget_by_hand(budget, recall, threshold):
    r = _two_images().result(budget)
    assert (r["recall_at_budget"], r["threshold_at_budget"], r["fp_budget"]) == (recall, threshold, budget)
    # The keys that were there keep their meaning: all detections at the floor.
    assert (r["n_images"], r["n_faces"], r["recall50"], r["fp_per_image"]) == (2, 4, 0.75, 1.5)


def test_the_budget_threshold_keeps_equal_scores_together_and_can_keep_nothing():
    from train.detector.evaluate import FaceScores
    scores = FaceScores(0.3)
    scores.add([_box(0)], [_box(0), _box(3)], [0.9, 0.9])  # a hit and a false alarm, tied
    scores.add([_box(0)], [_box(0)], [0.8])
    assert scores.at_budget(0.0) == (0.0, None)  # keeping the hit at 0.9 keeps its false twin
    assert scores.at_budget(0.5) == (1.0, 0.3)
    assert "threshold -" in format_scores(scores.result(0.0))
    assert FaceScores().at_budget(1.0) == (None, None)


def test_large_faces_and_large_false_alarms_are_counted_by_hand():
    """Faces of 64 px and over have their own recall; false positives of 64 px and over (on a
    portrait, a box around face and shoulders) their own count, also when pooled."""
    from train.detector.evaluate import FaceScores
    face, shoulders = [100, 100, 180, 190], [60, 80, 260, 330]  # 90 px, and 250 px around it
    scores = FaceScores(0.3)
    scores.add([face, _box(0)], [shoulders, _box(0), _box(5)], [0.9, 0.8, 0.7])
    r = scores.result()
    assert (r["n_large"], r["recall_large50"], r["large_fp"]) == (1, 0.0, 1)
    assert (r["recall_small50"], r["fp_per_image"]) == (1.0, 2.0)  # the 20 px false alarm too
    other = FaceScores(0.3)
    other.add([face], [face], [0.9])
    pooled = FaceScores.pooled([scores, other]).result()
    assert (pooled["n_large"], pooled["recall_large50"], pooled["large_fp"]) == (2, 0.5, 1)
    assert ">=64px 0.5000" in format_scores(pooled) and "(1 of >=64px)" in format_scores(pooled)


def test_the_pooled_operating_point_keeps_all_sets_within_the_budget():
    from train.detector.engine import operating_point
    from train.detector.evaluate import FaceScores
    x, y = FaceScores(0.3), FaceScores(0.3)
    x.add([_box(0)], [_box(3), _box(0)], [0.9, 0.8])  # 1 false positive in 1 image: within budget
    y.add([_box(0)], [_box(0), _box(3), _box(4)], [0.7, 0.6, 0.5])  # 2 in 1 image
    point = operating_point({"x": x, "y": y}, 1.0, 0.3)
    assert point["per_set"] == {"x": {"threshold_at_budget": 0.3, "recall_at_budget": 1.0},
                                "y": {"threshold_at_budget": 0.6, "recall_at_budget": 1.0}}
    # Pooled: 2 images allow 2 false positives; 0.9 and 0.6 are, 0.5 would be the third.
    assert (point["confidence"], point["recall_at_budget"]) == (0.6, 1.0)
    assert point["fp_budget"] == 1.0 and point["validated_at_confidence"] == 0.3
    pooled = FaceScores.pooled([x, y]).result(1.0)
    assert (pooled["n_images"], pooled["n_faces"], pooled["fp_per_image"]) == (2, 2, 1.5)


def test_the_trainer_keeps_the_epoch_best_by_the_chosen_metric():
    from train.detector import engine

    def val(ap_a, ap_b, r_a, r_b):
        return {"a": {"ap50": ap_a, "recall_at_budget": r_a}, "b": {"ap50": ap_b, "recall_at_budget": r_b}}
    # Epoch 1 has the best AP, epoch 2 the best recall within the false-positive budget.
    history = [{"epoch": 0, "val": val(0.80, 0.60, 0.70, 0.50)},
               {"epoch": 1, "val": val(0.92, 0.64, 0.72, 0.52)},
               {"epoch": 2, "val": val(0.90, 0.65, 0.80, 0.55)}]
    for metric, want in (("ap50", 1), ("recall_at_budget", 2)):
        best = {"epoch": None, "score": None, "metric": metric}
        for entry in history:
            score = engine.selection_score(entry["val"], metric)
            if engine.improves(score, best):
                best = {"epoch": entry["epoch"], "score": score, "metric": metric}
        assert best["epoch"] == want, metric
    assert engine.selection_score(history[2]["val"], "recall_at_budget") == pytest.approx(0.675)
    assert not engine.improves(0.675, {"epoch": 2, "score": 0.675})  # a tie keeps the earlier epoch
    assert engine.selection_score({"a": {"ap50": 0.9}}, "recall_at_budget") is None


def test_resuming_an_older_checkpoint_keeps_its_best_comparable():
    from train.detector import engine
    old = [{"epoch": 0, "val": {"a": {"ap50": 0.7}}}, {"epoch": 1, "val": {"a": {"ap50": 0.8}}}]
    best = {"epoch": 1, "score": 0.8}  # before selection rules were recorded: mean val AP50
    assert engine.resumed_best(best, old, "ap50") == {"epoch": 1, "score": 0.8, "metric": "ap50"}
    # Old val results lack the new metric: best.pt stays until the next validated epoch.
    assert engine.resumed_best(best, old, "recall_at_budget") == {"epoch": 1, "score": None,
                                                                  "metric": "recall_at_budget"}
    new = [dict(e, val={"a": dict(e["val"]["a"], recall_at_budget=0.5 + e["epoch"] / 10.0)}) for e in old]
    rescored = engine.resumed_best(best, new, "recall_at_budget")
    assert rescored["epoch"] == 1 and rescored["score"] == pytest.approx(0.6)


def test_calibration_raises_the_coarse_floor_where_it_pays_and_the_edge_reads_it_back(scenes, tmp_path):
    """``train.detector.calibrate`` on real kaggle853 val scenes: portraits whose 512 px
    anchors fire beside the face, and crowds. The floor that keeps the most faces within budget
    wins; the file it writes runs in the edge at that floor and that confidence."""
    from edge.infer.detect import create_detector
    from edge.infer.detectors.retinaface import SHIPPED_MODEL
    from train.detector.calibrate import calibrated_point, choose, score_candidates, write_point
    by_name = {os.path.basename(s.path): s for s in scenes["val"]}
    chosen = [by_name[n] for n in ("maksssksksss405.jpg", "maksssksksss403.jpg", "maksssksksss571.jpg")]
    chosen += [s for s in scenes["val"] if len(s.boxes) >= 6][:3]
    scored = score_candidates(SHIPPED_MODEL, {"kaggle853": {"val": chosen}}, candidates=(None, 0.9),
                              fp_budget=1.0, threads=2)
    (_, plain, plain_results), (_, floored, floored_results) = scored
    # The portraits' false alarms of 64 px and over are gone, and no face is lost.
    assert plain_results["pooled"]["large_fp"] >= 3 > floored_results["pooled"]["large_fp"]
    assert floored_results["pooled"]["recall50"] == plain_results["pooled"]["recall50"]
    # Within 1 false positive per image: 91 % of the faces with the floor, 86 % without.
    assert floored["recall_at_budget"] > plain["recall_at_budget"] and choose(scored) is scored[1]
    assert floored["confidence"] < plain["confidence"]
    assert choose([scored[0], scored[0]]) is scored[0]  # ties: the lower floor
    point = calibrated_point(scored, "val")
    assert point["anchor_confidence"] == {"512": 0.9} and point["confidence"] == floored["confidence"]
    assert [c["anchor_confidence"] for c in point["calibration"]["candidates"]] == [None, 0.9]
    out = str(tmp_path / "calibrated.onnx")
    write_point(SHIPPED_MODEL, point, out)
    detector = create_detector("retinaface", confidence=None, model=out)
    assert detector.anchor_confidence == {512: 0.9} and detector.confidence == pytest.approx(point["confidence"])


def test_the_flip_pass_gets_its_own_calibrated_confidence_and_the_edge_reads_it(scenes, tmp_path):
    """Both views merged score faces otherwise than one view; ``--flip-only`` chooses their
    confidence on val at the file's floor and keeps the rest of the file's operating point."""
    from edge.infer.detect import create_detector
    from edge.infer.detectors.retinaface import SHIPPED_MODEL
    from train.detector.calibrate import file_point, main
    kaggle = tmp_path / "kaggle853"  # three real val scenes, named as the set
    (kaggle / "images").mkdir(parents=True)
    (kaggle / "annotations").mkdir()
    rows = ["image,split"]
    for scene in [s for s in scenes["val"] if len(s.boxes) >= 4][:3]:
        name = os.path.basename(scene.path)
        shutil.copy(scene.path, str(kaggle / "images" / name))
        shutil.copy(scene.path.replace(os.sep + "images" + os.sep, os.sep + "annotations" + os.sep)
                    .rsplit(".", 1)[0] + ".xml", str(kaggle / "annotations"))
        rows.append("%s,val" % name)
    (kaggle / "splits.csv").write_text("\n".join(rows) + "\n")
    out = str(tmp_path / "flip.onnx")
    main([SHIPPED_MODEL, "--data", str(kaggle), "--flip-only", "--out", out])
    before, floor = file_point(SHIPPED_MODEL)
    after, after_floor = file_point(out)
    assert after_floor == floor and after["confidence"] == before["confidence"]  # the rest kept
    assert after["flip_calibration"]["anchor_confidence"] == floor
    assert 0.3 <= after["flip_confidence"] <= 1
    assert create_detector("retinaface", confidence=None, model=out, flip_pass=True).confidence == \
        pytest.approx(after["flip_confidence"])
    assert create_detector("retinaface", confidence=None, model=out).confidence == pytest.approx(before["confidence"])
    full = str(tmp_path / "full.onnx")  # a whole calibration chooses both points
    main([SHIPPED_MODEL, "--data", str(kaggle), "--candidates", "none,0.95", "--out", full])
    point, _ = file_point(full)
    assert [c["anchor_confidence"] for c in point["calibration"]["candidates"]] == [None, 0.95]
    assert point["flip_calibration"]["anchor_confidence"] == point.get("anchor_confidence", {}).get("512")
    assert 0.3 <= point["flip_confidence"] <= 1


def test_calibration_refuses_a_file_that_is_no_detector_export_and_bad_candidates(wider_onnx, kaggle, capsys):
    from train.detector.calibrate import main
    with pytest.raises(SystemExit, match="has no face-detector metadata") as err:
        main([wider_onnx, "--data", kaggle])  # the WIDER original: no metadata to calibrate
    assert wider_onnx in str(err.value)
    from edge.infer.detectors.retinaface import SHIPPED_MODEL
    for bad in ("0.5,high", "1.5"):
        with pytest.raises(SystemExit):
            main([SHIPPED_MODEL, "--data", kaggle, "--candidates", bad])
        assert "--candidates: numbers in 0..1 or none" in capsys.readouterr().err


def test_the_evaluator_command_scores_at_the_edge_s_settings_and_takes_overrides(scenes, tmp_path):
    """``python -m train.detector.evaluate`` on three real kaggle853 test scenes: the edge's
    enlargement limit and close-up pass by default, each one flag away."""
    from edge.infer.detectors.retinaface import SHIPPED_MODEL
    from train.detector.evaluate import main
    folder = tmp_path / "kaggle853"  # the set's name: the file's own framing for it applies
    (folder / "images").mkdir(parents=True)
    (folder / "annotations").mkdir()
    rows = ["image,split"]
    for scene in scenes["test"][:3]:
        name = os.path.basename(scene.path)
        shutil.copy(scene.path, str(folder / "images" / name))
        stem = os.path.splitext(scene.path)[0].replace(os.sep + "images" + os.sep, os.sep + "annotations" + os.sep)
        shutil.copy(stem + ".xml", str(folder / "annotations"))
        rows.append("%s,test" % name)
    (folder / "splits.csv").write_text("\n".join(rows) + "\n")
    runs = {}
    for name, flags in (("default", []), ("overridden", ["--max-upscale", "2", "--no-close-up-pass"])):
        out = str(tmp_path / (name + ".json"))
        main([SHIPPED_MODEL, "--data", str(folder), "--split", "test", "--json", out] + flags)
        with open(out) as stream:
            runs[name] = json.load(stream)["kaggle853"]
    assert runs["default"]["settings"]["max_upscale"] == 4.0 and runs["default"]["settings"]["close_up_pass"]
    assert runs["overridden"]["settings"]["max_upscale"] == 2.0
    assert runs["overridden"]["settings"]["close_up_pass"] is False
    assert runs["default"]["n_faces"] == sum(len(s.boxes) for s in scenes["test"][:3]) > 0
    assert 0 < runs["default"]["recall50"] <= 1


@pytest.mark.slow
def test_averaged_weights_are_what_is_validated_saved_and_resumed(wider_onnx, kaggle, tmp_path):
    """``--ema``: best.pt and last.pt hold the moving average of the weights, last.pt the
    trained ones too; the average is decay x itself + (1 - decay) x the new weights; a run
    is resumed with the flag it was trained with."""
    from train.detector import checkpoint
    from train.detector.__main__ import main
    out = str(tmp_path / "run")
    common = ["--data", kaggle, "--out", out, "--limit", "3", "--input-size", "160", "--batch-size", "3",
              "--threads", "2", "--init", wider_onnx, "--cache-dir", str(tmp_path / "cache"), "--ema", "0.5"]
    main(common + ["--epochs", "1"])  # one step: the average starts as the weights themselves
    first = checkpoint.read(os.path.join(out, "last.pt"))
    main(common + ["--epochs", "2", "--resume", os.path.join(out, "last.pt")])
    second = checkpoint.read(os.path.join(out, "last.pt"))
    changed = [k for k, v in second["train_state"].items()
               if v.is_floating_point() and not torch.equal(v, first["train_state"][k])]
    assert changed  # the second step moved the trained weights
    for key in changed:
        expected = 0.5 * first["model_state"][key] + 0.5 * second["train_state"][key]
        assert torch.allclose(second["model_state"][key], expected, atol=1e-6), key
        assert not torch.equal(second["model_state"][key], second["train_state"][key])
    best = checkpoint.read(os.path.join(out, "best.pt"))
    averages = {0: load_from_onnx(wider_onnx).state_dict(), 1: first["model_state"], 2: second["model_state"]}
    assert all(torch.equal(best["model_state"][k], averages[best["epoch"]][k]) for k in changed)
    with pytest.raises(SystemExit, match="trained with --ema; resume it with the same --ema"):
        main(common[:-2] + ["--epochs", "3", "--resume", os.path.join(out, "last.pt")])
