"""The operator's hub: what the loop saw, turned into people, alerts, messages and a state.

The loop calls ``on_frame`` after each frame (its faces and the tracker's tracks) and
``tick`` on every turn, frame or not (so the status keeps coming while a camera is
away). The hub counts people (``PeopleCounter``), fires the alert rules, triggers clips,
queues MQTT messages (``PREFIX/person`` per person, ``PREFIX/alert`` per alert,
``PREFIX/status`` every ``status_every`` seconds) and keeps a compliance-over-time
series. ``snapshot`` (the page and /metrics, from the HTTP threads) reads it all under
one lock that the loop holds for microseconds.
"""
import collections
import logging
import threading
import time

from edge.infer.faces import count_labels
from edge.ops.people import iso_time

log = logging.getLogger(__name__)

# Work done on a turn without a frame or between frames, at most this often (seconds):
# rules, chart and status need no more, and the Nano's CPU has better things to do.
TICK_EVERY = 0.25


class OpsHub(object):
    """See the module docstring. people: ``PeopleCounter``; rules: ``AlertRules`` or None;
    mqtt: ``MqttPublisher`` or None; clips: ``ClipRecorder`` or None; chart_step: seconds
    between points of the compliance chart (``chart_points`` kept); clock: wall time."""

    def __init__(self, people, rules=None, mqtt=None, clips=None, status_every=5.0,
                 chart_step=10.0, chart_points=360, clock=time.time):
        self.people, self.rules, self.mqtt, self.clips = people, rules, mqtt, clips
        self.status_every, self.chart_step = float(status_every), float(chart_step)
        self.clock = clock
        self.lock = threading.Lock()
        self.started = clock()
        self.frames = self.errors = 0
        self.fps = 0.0
        self.source_state = "opening"
        self.last_frame_time = None
        self.faces_total = count_labels([])
        self.faces_total["unknown"] = 0      # faces not classified yet
        self.in_view = dict(self.faces_total)
        self.alerts = collections.deque(maxlen=20)
        self.chart = collections.deque(maxlen=int(chart_points))
        self.statuses = 0
        self._next_tick = self._next_status = self.started
        self._next_chart = self.started
        self._closed = False

    # -- the loop's side ------------------------------------------------------------------

    def on_frame(self, faces, tracks, frame=None):
        """One processed frame: its faces (``Face``) and ``Tracker.all``."""
        now = self.clock()
        with self.lock:
            view = count_labels(faces)
            view["unknown"] = sum(1 for f in faces if f.label is None)
            for label, n in view.items():
                self.faces_total[label] = self.faces_total.get(label, 0) + n
            self.in_view = view
            self.last_frame_time = now
            settled = self.people.observe(tracks, now, frame)
            if settled:  # a crowd settles at once after a cut: one summary for all of them
                window = self.people.summary()["window"]
                for person in settled:
                    self._person(person, now, window)

    def tick(self, source_state, fps=None, frames=None, errors=None):
        """A turn of the loop: the source's state and the pipeline's counters."""
        now = self.clock()
        with self.lock:
            self.source_state = source_state
            if fps is not None:
                self.fps = fps
            if frames is not None:
                self.frames, self.errors = frames, errors or 0
            if now < self._next_tick:
                return
            self._next_tick = now + TICK_EVERY
            self._periodic(now)

    def _periodic(self, now, final=False):
        summary = self.people.summary(now)
        if self.rules is not None:
            for alert in self.rules.tick(now, summary["window"], final):
                self._alert(alert)
        if now >= self._next_chart or final:
            run = summary["run"]
            self.chart.append([round(now, 3), summary["window"]["compliance"], run["total"],
                               run["non_compliant"]])
            self._next_chart = max(self._next_chart + self.chart_step, now)
        if self.mqtt is not None and (now >= self._next_status or final):
            self.mqtt.publish("status", self._status(now, summary))
            self.statuses += 1
            self._next_status = max(self._next_status + self.status_every, now)  # a steady pace

    def _person(self, person, now, window):
        if self.mqtt is not None:
            self.mqtt.publish("person", person.to_dict())
        if self.clips is not None and not person.compliant:
            self.clips.trigger(person, now)
        if self.rules is not None:
            for alert in self.rules.person(person, now, window):
                self._alert(alert)

    def _alert(self, alert):
        self.alerts.append(alert)
        if self.mqtt is not None:
            self.mqtt.publish("alert", alert)

    def _status(self, now, summary):
        run, window = summary["run"], summary["window"]
        doc = collections.OrderedDict([
            ("time", iso_time(now)), ("fps", round(self.fps, 2)),
            ("faces", sum(self.in_view.values())), ("faces_by_label", dict(self.in_view)),
            ("people", dict(run["people"])), ("compliant", run["compliant"]),
            ("non_compliant", run["non_compliant"]), ("compliance", run["compliance"]),
            ("window", collections.OrderedDict([
                ("seconds", summary["window_seconds"]), ("people", dict(window["people"])),
                ("compliance", window["compliance"])])),
            ("source", self.source_state), ("frames", self.frames),
            ("uptime", round(now - self.started, 1))])
        if self.mqtt is not None:
            doc["mqtt_dropped"] = self.mqtt.dropped
        return doc

    def close(self):
        """The run is over: count the people still in view, send a last status, flush MQTT.

        Clips are one of the loop's outputs: whoever closes those closes the recorder,
        after this (a person counted here may still start a clip).
        """
        if self._closed:
            return
        self._closed = True
        now = self.clock()
        with self.lock:
            settled = self.people.finish(now)
            window = self.people.summary(now)["window"]
            for person in settled:
                self._person(person, now, window)
            self._periodic(now, final=True)
            run = self.people.summary(now)["run"]
        log.info("people counted: %d (%s), compliance %s; %d short tracks not counted",
                 run["total"], ", ".join("%s %d" % kv for kv in run["people"].items()),
                 "-" if run["compliance"] is None else "%.1f%%" % (100 * run["compliance"]),
                 self.people.discarded)
        if self.mqtt is not None:
            self.mqtt.close()

    # -- the readers' side (HTTP threads) -----------------------------------------------------

    def snapshot(self, full=True):
        """The state as a JSON-ready dict; ``full``: with recent people, alerts and the chart."""
        now = self.clock()
        with self.lock:
            doc = collections.OrderedDict([
                ("time", now), ("uptime", round(now - self.started, 3)),
                ("source", self.source_state),
                ("source_up", self.source_state == "streaming"),
                ("fps", round(self.fps, 2)), ("frames", self.frames), ("errors", self.errors),
                ("last_frame_time", self.last_frame_time),
                ("faces", collections.OrderedDict([
                    ("in_view", sum(self.in_view.values())), ("by_label", dict(self.in_view)),
                    ("total", dict(self.faces_total))])),
                ("people", self.people.summary(now)),
                ("alerts_fired", dict(self.rules.fired) if self.rules is not None else {}),
                ("mqtt", self.mqtt.stats() if self.mqtt is not None else None),
                ("clips", self.clips.stats() if self.clips is not None else None)])
            if full:
                doc["recent"] = [p.to_dict() for p in reversed(self.people.recent)]
                doc["recent_alerts"] = list(reversed(self.alerts))
                doc["chart"] = {"step": self.chart_step, "points": list(self.chart)}
        return doc
