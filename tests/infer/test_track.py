"""The IoU tracker: identities across frames, voting, classification interval."""
import numpy as np

from edge.infer.faces import called_non_compliant, decide
from edge.infer.track import Tracker, greedy_match, iou_matrix

CLASSES = ["mask", "no_mask"]


def boxes_at(shift):
    """Three faces that drift right by ``shift`` px (a slow pan)."""
    base = np.array([[100, 100, 140, 150], [300, 120, 330, 160], [500, 90, 560, 170]], np.float32)
    return base + np.array([shift, 0, shift, 0], np.float32)


def test_iou_matrix_and_greedy_match():
    ious = iou_matrix([[0, 0, 10, 10]], [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    assert np.allclose(ious, [[1.0, 1 / 3.0, 0.0]], atol=1e-6)
    # The best pair wins even when a worse one comes first.
    assert greedy_match(np.array([[0.5, 0.9], [0.8, 0.0]]), 0.3) == [(0, 1), (1, 0)]
    assert greedy_match(np.array([[0.2]]), 0.3) == []


def test_identities_survive_motion_and_a_missed_detection():
    tracker = Tracker(iou=0.3, max_missed=2)
    first = [t.id for t in tracker.update(boxes_at(0), np.ones(3))]
    assert first == [1, 2, 3]
    assert [t.id for t in tracker.visible()] == first  # new tracks are visible at once
    for shift in (4, 8, 12):
        assert [t.id for t in tracker.update(boxes_at(shift), np.ones(3))] == first
    # Face 2 is missed for one detector run (occlusion), then comes back with its id.
    tracker.update(boxes_at(16)[[0, 2]], np.ones(2))
    back = tracker.update(boxes_at(20), np.ones(3))
    assert [t.id for t in back] == first
    # Detections in a different order keep their tracks.
    assert [t.id for t in tracker.update(boxes_at(22)[::-1], np.ones(3))] == first[::-1]


def test_lost_track_is_dropped_after_max_missed_and_new_face_gets_new_id():
    tracker = Tracker(iou=0.3, max_missed=1)
    tracker.update(boxes_at(0), np.ones(3))
    for _ in range(2):
        tracker.update(boxes_at(0)[:1], np.ones(1))
    assert [t.id for t in tracker.all] == [1]
    again = tracker.update(boxes_at(0), np.ones(3))
    assert [t.id for t in again] == [1, 4, 5]


def test_min_hits_hides_a_track_until_confirmed():
    tracker = Tracker(min_hits=2)
    assert tracker.update(boxes_at(0), np.ones(3)) == []
    assert [t.id for t in tracker.update(boxes_at(2), np.ones(3))] == [1, 2, 3]
    assert [t.id for t in tracker.visible()] == [1, 2, 3]


def test_vote_suppresses_a_one_frame_flip():
    tracker = Tracker(vote=5)
    track = tracker.update(boxes_at(0), np.ones(3))[0]
    for frame in range(4):
        track.add_probs([0.9, 0.1], CLASSES, frame)
        assert track.label == "mask"
    track.add_probs([0.05, 0.95], CLASSES, 4)  # one bad crop
    assert track.label == "mask"
    assert 0.5 < track.score < 0.9
    # A lasting change does win once it holds the majority of the window.
    for frame in range(5, 8):
        track.add_probs([0.05, 0.95], CLASSES, frame)
    assert track.label == "no_mask"


def test_vote_of_one_follows_every_classification():
    tracker = Tracker(vote=1)
    track = tracker.update(boxes_at(0), np.ones(3))[0]
    track.add_probs([0.9, 0.1], CLASSES, 0)
    track.add_probs([0.2, 0.8], CLASSES, 1)
    assert track.label == "no_mask" and abs(track.score - 0.8) < 1e-6


def test_new_track_classified_at_once_then_at_the_interval():
    tracker = Tracker()
    every = 4
    classified = {}
    for frame in range(10):
        boxes = boxes_at(frame) if frame < 6 else np.concatenate([boxes_at(frame), [[700, 100, 740, 150]]])
        for track in tracker.update(boxes, np.ones(len(boxes))):
            if track.needs_classification(frame, every):
                classified.setdefault(track.id, []).append(frame)
                track.add_probs([0.9, 0.1], CLASSES, frame)
    assert classified[1] == [0, 4, 8]
    assert classified[4] == [6]  # the face that appeared at frame 6, at once


def test_non_compliant_threshold_sets_the_operating_point():
    classes = ["mask", "no_mask", "incorrect"]
    probs = [0.6, 0.15, 0.25]  # mask on top, yet 40 % non-compliant
    assert decide(probs, classes) == ("mask", 0.6)
    assert decide(probs, classes, 0.5) == ("mask", 0.6)
    label, score = decide(probs, classes, 0.4)
    assert label == "incorrect" and abs(score - 0.25) < 1e-9  # the likelier non-compliant class
    # Several faces at once, as the evaluators call it; a model without `mask`: its top class.
    rows = np.array([[0.9, 0.05, 0.05], [0.55, 0.45, 0.0], [0.2, 0.8, 0.0]])
    assert called_non_compliant(rows, classes).tolist() == [False, False, True]
    assert called_non_compliant(rows, classes, 0.3).tolist() == [False, True, True]
    assert called_non_compliant([[0.7, 0.3]], ["no_mask", "incorrect"], 0.9).tolist() == [True]
    # A track votes first, then decides at the threshold.
    track = Tracker(vote=2).update(boxes_at(0), np.ones(3))[0]
    track.add_probs([0.7, 0.3, 0.0], classes, 0, 0.35)
    assert track.label == "mask"
    track.add_probs([0.5, 0.5, 0.0], classes, 1, 0.35)  # mean 0.6 / 0.4
    assert track.label == "no_mask" and abs(track.score - 0.4) < 1e-6
