"""bench/verifier_study.py: its crops show the candidate where it says, and its candidates, cut
at a threshold, score exactly as the trainer's evaluator scores the detector run there."""
import os
import sys

import cv2
import numpy as np
import pytest

from conftest import ROOT, data_path
from train.detector.data import load_scene_set
from train.detector.evaluate import FaceScores, edge_settings, evaluate_scenes

sys.path.insert(0, os.path.join(ROOT, "bench"))
import verifier_study  # noqa: E402

DETECTOR = os.path.join(ROOT, "models", "face_detector.onnx")


@pytest.fixture(scope="module")
def val_scenes():
    split, _, _ = load_scene_set(data_path("kaggle853"))
    return {"kaggle853": {"val": split["val"][:6], "train": split["val"][:6]}}


def test_a_context_crop_holds_the_box_in_its_centre_at_its_scale(val_scenes):
    scene = val_scenes["kaggle853"]["val"][0]
    image = cv2.imread(scene.path, cv2.IMREAD_COLOR)
    x1, y1, x2, y2 = box = max(scene.boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
    crop = verifier_study.square_crop(image, box, 64, 2.0)
    assert crop.shape == (64, 64, 3)
    # At context 2 the box's longest side spans half the crop, centred.
    half, pad = max(x2 - x1, y2 - y1) / 2, int(max(x2 - x1, y2 - y1)) + 1
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    top, left = int(round((y1 + y2) / 2 - half)) + pad, int(round((x1 + x2) / 2 - half)) + pad
    face = padded[top:top + int(round(2 * half)), left:left + int(round(2 * half))]
    centre = crop[16:48, 16:48].astype(float)
    expected = cv2.resize(face, (32, 32), interpolation=cv2.INTER_AREA).astype(float)
    assert np.corrcoef(centre.ravel(), expected.ravel())[0, 1] > 0.9
    shifted = crop[0:32, 0:32].astype(float)  # a corner of the context, not the face
    assert np.corrcoef(shifted.ravel(), expected.ravel())[0, 1] < np.corrcoef(centre.ravel(), expected.ravel())[0, 1]


def test_candidates_cut_at_a_threshold_score_as_the_trainers_evaluator(val_scenes):
    from edge.infer.detectors.retinaface import RetinaFaceDetector
    candidates = verifier_study.mine(val_scenes, "val", DETECTOR, 0.1)
    assert set(candidates["label"]) <= {0, 1} and candidates["label"].sum() > 0
    assert (candidates["score"] >= 0.1).all()
    study = verifier_study.scene_scores(val_scenes, "val", candidates, candidates["score"], 0.3)["kaggle853"]
    detector = RetinaFaceDetector(None, model=DETECTOR, backend="ort", **dict(edge_settings(), confidence=0.3))
    direct = evaluate_scenes(detector, val_scenes["kaggle853"]["val"])
    assert study.result() == direct.result()
    pooled = verifier_study.scene_scores(val_scenes, "val", candidates, candidates["score"], 0.3)["pooled"]
    assert pooled.result() == FaceScores.pooled([direct]).result()


def test_training_candidates_leave_out_the_ambiguous_and_the_unannotated(val_scenes):
    from edge.infer.track import iou_matrix
    everything = verifier_study.mine(val_scenes, "train", DETECTOR, 0.1)  # no ignore: every candidate
    background = np.nonzero(everything["label"] == 0)[0]
    assert len(background)
    key, region = everything["key"][background[0]], everything["box"][background[:1]]
    kept = verifier_study.mine(val_scenes, "train", DETECTOR, 0.1, {("kaggle853", key): region})
    assert len(kept["label"]) < len(everything["label"])
    truth_of = dict((s.key, s.boxes) for s in val_scenes["kaggle853"]["train"])
    for key_, box, label in zip(kept["key"], kept["box"], kept["label"]):
        truth = truth_of[key_]
        overlap = iou_matrix(box[None], truth).max() if len(truth) else 0.0
        assert overlap >= 0.5 if label else overlap < 0.3  # the ambiguous 0.3-0.5 are left out
        if key_ == key and not label:  # background is never taken from a region left unannotated
            assert iou_matrix(box[None], region).max() <= 0.1


def test_the_mistake_sheets_show_the_chosen_candidates(val_scenes, tmp_path):
    candidates = verifier_study.mine(val_scenes, "val", DETECTOR, 0.1)
    p_face = np.where(candidates["label"] == 1, 0.2, 0.9)  # a verifier that has it backwards
    rescored = candidates["score"] * p_face
    verifier_study.draw_mistakes(candidates, rescored, 0.05, 0.3233, 64, 2.0, str(tmp_path), n=10)
    kept = cv2.imread(str(tmp_path / "test_background_kept.png"))
    n_kept = min(10, int(((candidates["label"] == 0) & (rescored >= 0.05)).sum()))
    assert n_kept and kept.shape == (96 * ((n_kept + 7) // 8), 96 * 8, 3)
    assert cv2.imread(str(tmp_path / "test_faces_still_missed.png")) is not None
