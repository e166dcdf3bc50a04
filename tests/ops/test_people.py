"""People from tracks, on hand-made track sequences through the real tracker; the alert rules."""
import numpy as np
import pytest

from edge.infer.track import Tracker
from edge.ops.alerts import AlertRules
from edge.ops.people import PeopleCounter, Person, iso_time

CLASSES = ["mask", "no_mask", "incorrect"]
MASK, NO_MASK, INCORRECT = [0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.1, 0.2, 0.7]
A, B = [100, 100, 140, 150], [400, 100, 440, 150]  # two faces far apart


class Scene(object):
    """A tracker fed by hand: each step is one detector run (the tracks' ids are real)."""

    def __init__(self, counter, max_missed=1):
        self.tracker = Tracker(iou=0.3, max_missed=max_missed, vote=5)
        self.counter, self.t, self.frame = counter, 1000.0, 0
        self.settled = []

    def step(self, faces, seconds=1.0):
        """faces: [(box, probs or None)]: detections of this run, classified when probs given."""
        boxes = np.array([f[0] for f in faces], np.float32).reshape(-1, 4)
        tracks = self.tracker.update(boxes, np.ones(len(faces)))
        for track, (_, probs) in zip(tracks, faces):
            if probs is not None:
                track.add_probs(np.array(probs, np.float32), CLASSES, self.frame)
        self.settled += self.counter.observe(self.tracker.all, self.t, self.frame)
        self.t += seconds
        self.frame += 1
        return tracks


def test_a_person_settles_by_vote_once_and_is_counted_once():
    counter = PeopleCounter(min_detections=2, settle_votes=3, window=60)
    scene = Scene(counter)
    # Its first look says no_mask, the next ones mask: the vote (mean of the last 5) settles mask.
    scene.step([(A, NO_MASK)])
    scene.step([(A, MASK)])
    assert scene.settled == [] and counter.live == 1   # two votes: not settled yet
    scene.step([(A, MASK)])
    assert [(p.track, p.label, p.votes, p.ended) for p in scene.settled] == [(1, "mask", 3, False)]
    for _ in range(6):  # still in view, classified again and again: not counted again
        scene.step([(A, MASK)])
    for _ in range(3):  # gone: the tracker drops it after max_missed runs
        scene.step([])
    assert len(scene.settled) == 1 and counter.live == 0
    assert counter.totals == {"mask": 1, "no_mask": 0, "incorrect": 0}
    person = scene.settled[0]
    assert person.first_seen == 1000.0 and person.last_seen == 1002.0  # seen until it settled
    message = person.to_dict()
    assert list(message) == ["track", "label", "compliant", "score", "first_seen", "last_seen",
                             "seconds", "votes"]
    assert message["compliant"] is True and message["first_seen"] == iso_time(1000.0)
    assert message["first_seen"] == "1970-01-01T00:16:40.000Z"


def test_a_person_who_leaves_early_is_counted_at_the_end_and_a_stray_detection_never():
    counter = PeopleCounter(min_detections=2, settle_votes=3, window=60)
    scene = Scene(counter)
    scene.step([(A, NO_MASK), (B, MASK)])   # B: one stray detection, then nothing
    scene.step([(A, None)])                 # A: seen twice, classified once
    assert scene.settled == []
    scene.step([])
    scene.step([])                          # both dropped by the tracker
    assert [(p.track, p.label, p.ended, p.detections) for p in scene.settled] == [(1, "no_mask", True, 2)]
    assert counter.discarded == 1 and counter.live == 0
    # A track that was never classified is not a person either, however long it was seen.
    scene.step([(B, None)])
    scene.step([(B, None)])
    counter.finish(scene.t)
    assert counter.discarded == 2 and sum(counter.totals.values()) == 1


def test_a_scene_cut_ends_every_track_and_finish_counts_the_rest():
    counter = PeopleCounter(min_detections=1, settle_votes=5, window=60)
    scene = Scene(counter, max_missed=50)
    scene.step([(A, MASK), (B, INCORRECT)])
    scene.tracker.reset()   # what the pipeline does at a scene cut
    scene.step([(A, NO_MASK)])
    labels = sorted((p.track, p.label) for p in scene.settled)
    assert labels == [(1, "mask"), (2, "incorrect")]   # the reset ended both
    assert [(p.track, p.label) for p in counter.finish(scene.t)] == [(3, "no_mask")]
    assert counter.finish(scene.t) == []               # counted once
    run = counter.summary()["run"]
    # incorrect is non-compliant, like no_mask.
    assert (run["total"], run["compliant"], run["non_compliant"]) == (3, 1, 2)
    assert run["compliance"] == pytest.approx(1 / 3.0, abs=1e-4)


def test_window_counts_expire_and_run_counts_stay():
    counter = PeopleCounter(min_detections=1, settle_votes=1, window=10)
    scene = Scene(counter)
    scene.step([(A, MASK)], seconds=4)
    scene.step([(B, NO_MASK)], seconds=4)      # A dropped here (not matched)... already counted
    summary = counter.summary(scene.t)
    assert summary["window"]["people"] == {"mask": 1, "no_mask": 1, "incorrect": 0}
    assert summary["window"]["compliance"] == 0.5
    # 10 s after A was counted (t=1000) it leaves the window; B (t=1004) a little later.
    assert counter.summary(1010.5)["window"]["people"] == {"mask": 0, "no_mask": 1, "incorrect": 0}
    later = counter.summary(1020.0)
    assert later["window"]["total"] == 0 and later["window"]["compliance"] is None
    assert later["run"]["people"] == {"mask": 1, "no_mask": 1, "incorrect": 0}


def person(track, label):
    return Person(track, label, 0.9, 0.0, 1.0)


def test_non_compliant_alerts_hold_off_gathers_a_group_into_one():
    rules = AlertRules(non_compliant=True, hold_off=30)
    assert rules.person(person(1, "mask"), 0) == []
    first = rules.person(person(2, "no_mask"), 10)
    assert len(first) == 1 and first[0]["rule"] == "non_compliant" and first[0]["tracks"] == [2]
    # Three more within the hold-off: no message each...
    for track, t in ((3, 12), (4, 13), (5, 20)):
        assert rules.person(person(track, "incorrect" if track == 4 else "no_mask"), t) == []
    assert rules.tick(39) == []
    # ...one message for all three when it ends.
    group = rules.tick(40)
    assert len(group) == 1 and group[0]["tracks"] == [3, 4, 5] and group[0]["people"] == 3
    assert group[0]["labels"] == {"no_mask": 2, "incorrect": 1}
    assert rules.tick(45) == [] and rules.fired["non_compliant"] == 2
    # People held back when the run ends are announced then.
    assert rules.person(person(6, "no_mask"), 50) == []
    assert rules.tick(51) == [] and rules.tick(51, final=True)[0]["tracks"] == [6]
    assert AlertRules(non_compliant=False).person(person(7, "no_mask"), 0) == []


def window(mask, other):
    total = mask + other
    return {"compliance": mask / float(total) if total else None, "total": total,
            "people": {"mask": mask, "no_mask": other, "incorrect": 0}}


def test_compliance_rule_fires_once_per_fall_and_re_arms_on_recovery():
    rules = AlertRules(non_compliant=False, min_compliance=0.8, min_people=5, hold_off=60)
    assert rules.tick(0, window(1, 3)) == []           # 25 %, but only 4 people
    fired = rules.tick(1, window(2, 3))                # 40 % of 5 people
    assert len(fired) == 1 and fired[0]["rule"] == "min_compliance"
    assert fired[0]["compliance"] == 0.4 and fired[0]["people"] == 5
    assert "below 80%" in fired[0]["text"]
    for t in range(2, 200):                            # stays low: one event, one message
        assert rules.tick(t, window(2, 4)) == []
    assert rules.tick(200, window(9, 1)) == []         # recovered: re-armed
    assert len(rules.tick(201, window(3, 7))) == 1     # a new fall, hold-off long passed
    assert rules.tick(210, window(9, 1)) == []
    assert rules.tick(220, window(3, 7)) == []         # falls again within the hold-off
    assert len(rules.tick(262, window(3, 7))) == 1     # ... and is announced after it
    assert rules.fired["min_compliance"] == 3
