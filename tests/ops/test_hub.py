"""The hub on a fake clock: status cadence (a camera away included), people and alerts out,
the state /metrics renders."""
import numpy as np
import pytest

from edge.infer.faces import Face
from edge.infer.track import Tracker
from edge.ops import metrics
from edge.ops.alerts import AlertRules
from edge.ops.hub import OpsHub
from edge.ops.people import PeopleCounter

parser = pytest.importorskip("prometheus_client.parser", reason="prometheus_client not installed")
CLASSES = ["mask", "no_mask", "incorrect"]


class FakeMqtt(object):
    """Records what the hub publishes (the real publisher is tested against Mosquitto)."""
    dropped = 0

    def __init__(self):
        self.messages, self.closed = [], False

    def publish(self, sub, doc, retain=False):
        self.messages.append((sub, doc))

    def stats(self):
        return {"connected": True, "sent": len(self.messages), "dropped": 0, "buffered": 0,
                "inflight": 0, "connects": 1, "failed": 0}

    def close(self):
        self.closed = True

    def topics(self, sub):
        return [doc for s, doc in self.messages if s == sub]


def test_status_keeps_its_pace_through_an_outage_and_people_and_alerts_go_out():
    clock = [1000.0]
    mqtt = FakeMqtt()
    hub = OpsHub(PeopleCounter(min_detections=2, settle_votes=2, window=60), AlertRules(hold_off=30),
                 mqtt, status_every=5.0, chart_step=10.0, clock=lambda: clock[0])
    tracker = Tracker(max_missed=1)
    boxes = np.array([[10, 10, 50, 60], [100, 10, 140, 60]], np.float32)
    for frame in range(60):          # 6 s of frames at 10 fps: two people, one unmasked
        tracks = tracker.update(boxes, np.ones(2))
        if frame % 5 == 0:
            tracks[0].add_probs(np.array([0.9, 0.1, 0.0]), CLASSES, frame)
            tracks[1].add_probs(np.array([0.1, 0.2, 0.7]), CLASSES, frame)
        faces = [Face(t.box, 1.0, t.probs, t.label, t.score, t.id) for t in tracks]
        hub.on_frame(faces, tracker.all, frame)
        hub.tick("streaming", 10.0, frame + 1, 0)
        clock[0] += 0.1
    for _ in range(120):             # then the camera is away for 12 s: the loop idles
        hub.tick("reconnecting")
        clock[0] += 0.1
    state = hub.snapshot()
    assert state["source"] == "reconnecting" and state["source_up"] is False
    hub.close()
    statuses = mqtt.topics("status")
    times = [s["uptime"] for s in statuses]
    assert len(statuses) == 5 and times[0] == 0.0  # every 5 s over 18 s, and one at the end
    # Due every 5 s, sent at the first turn of the loop after (turns are 0.25 s apart at most).
    assert all(5 * k <= t <= 5 * k + 0.35 for k, t in enumerate(times[:4])), times
    assert statuses[1]["source"] == "streaming" and statuses[2]["source"] == "reconnecting"
    assert statuses[-1]["people"] == {"mask": 1, "no_mask": 0, "incorrect": 1}
    assert statuses[-1]["compliance"] == 0.5 and statuses[1]["faces"] == 2
    people = mqtt.topics("person")
    assert sorted((p["track"], p["label"], p["compliant"]) for p in people) == [
        (1, "mask", True), (2, "incorrect", False)]
    alerts = mqtt.topics("alert")
    assert [(a["rule"], a["tracks"]) for a in alerts] == [("non_compliant", [2])]
    assert mqtt.closed
    # The chart has a point every 10 s; the page's state has the people, newest first.
    points = [p[0] - 1000.0 for p in state["chart"]["points"]]
    assert len(points) == 2 and points[0] == 0.0 and 10.0 <= points[1] <= 10.35
    assert [p["track"] for p in state["recent"]] == [2, 1]


def test_metrics_render_of_a_hub_parses_and_says_the_source_is_down():
    clock = [50.0]
    hub = OpsHub(PeopleCounter(), clock=lambda: clock[0])
    hub.on_frame([Face([0, 0, 10, 10], 0.9), Face([20, 0, 30, 10], 0.9, label="mask", score=0.9)], [], 0)
    hub.tick("reconnecting", 12.5, 7, 1)
    text = metrics.render(hub.snapshot(full=False), None)
    found = dict((f.name, f) for f in parser.text_string_to_metric_families(text))
    value = lambda name, **labels: [s.value for s in found[name].samples if s.labels == labels][0]  # noqa: E731
    assert value("maskgate_source_up") == 0 and value("maskgate_fps") == 12.5
    assert value("maskgate_frames") == 7 and value("maskgate_frame_errors") == 1
    assert value("maskgate_faces", label="unknown") == 1 and value("maskgate_faces", label="mask") == 1
    assert np.isnan(value("maskgate_compliance_ratio", scope="run"))   # no one counted yet
    assert "maskgate_mqtt_connected" not in found and "maskgate_stage_latency_seconds" not in found
