"""``/metrics``: the service's state in the Prometheus text exposition format (0.0.4).

Written here with the standard library (about what prometheus_client would write for the
same numbers): the device runs Python 3.6, and a few counters and one histogram do not
justify a dependency. The tests parse the output with prometheus_client's own parser.
"""
from edge.infer.analyzer import BUCKETS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value):
    if value is None:
        return "NaN"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


class _Text(object):
    def __init__(self):
        self.lines = []

    def family(self, name, kind, help_text, samples):
        """``samples``: [(labels dict or None, value)] of one metric family."""
        self.lines.append("# HELP %s %s" % (name, help_text.replace("\\", "\\\\").replace("\n", " ")))
        self.lines.append("# TYPE %s %s" % (name, kind))
        for labels, value in samples:
            self.sample(name, labels, value)

    def sample(self, name, labels, value):
        if labels:
            inner = ",".join('%s="%s"' % (k, _escape(v)) for k, v in labels.items())
            name = "%s{%s}" % (name, inner)
        self.lines.append("%s %s" % (name, _number(value)))


def render(state, histograms=None, stream=None):
    """The exposition text of a hub ``snapshot(full=False)``, ``StageTimer.histograms()`` and
    the page's stream (``MjpegFeed``) or None."""
    out = _Text()
    faces, people = state["faces"], state["people"]
    out.family("maskgate_frames_total", "counter", "Frames processed (bad ones included).",
               [(None, state["frames"])])
    out.family("maskgate_frame_errors_total", "counter", "Frames skipped after an error.",
               [(None, state["errors"])])
    out.family("maskgate_faces_total", "counter",
               "Faces seen per frame, summed over frames, by label (unknown: not classified yet).",
               [({"label": k}, v) for k, v in faces["total"].items()])
    out.family("maskgate_faces_in_view", "gauge", "Faces in the last frame, by label.",
               [({"label": k}, v) for k, v in faces["by_label"].items()])
    out.family("maskgate_people_total", "counter",
               "People counted (a track from first sight to end, counted once), by settled label.",
               [({"label": k}, v) for k, v in people["run"]["people"].items()])
    out.family("maskgate_people_window", "gauge",
               "People counted in the sliding window (maskgate_people_window_seconds), by label.",
               [({"label": k}, v) for k, v in people["window"]["people"].items()])
    out.family("maskgate_people_window_seconds", "gauge", "Length of the people window.",
               [(None, people["window_seconds"])])
    out.family("maskgate_compliance_ratio", "gauge",
               "Compliant share of the people counted (scope: run or window); NaN before any.",
               [({"scope": "run"}, people["run"]["compliance"]),
                ({"scope": "window"}, people["window"]["compliance"])])
    out.family("maskgate_fps", "gauge", "Frames per second, smoothed.", [(None, state["fps"])])
    out.family("maskgate_source_up", "gauge", "1 while the source delivers frames (streaming).",
               [(None, state["source_up"])])
    out.family("maskgate_uptime_seconds", "gauge", "Seconds since the service started.",
               [(None, state["uptime"])])
    if state.get("last_frame_time") is not None:
        out.family("maskgate_last_frame_timestamp_seconds", "gauge",
                   "Unix time of the last processed frame.", [(None, state["last_frame_time"])])
    if state.get("alerts_fired"):
        out.family("maskgate_alerts_total", "counter", "Alerts fired, by rule.",
                   [({"rule": k}, v) for k, v in state["alerts_fired"].items()])
    mqtt = state.get("mqtt")
    if mqtt is not None:
        out.family("maskgate_mqtt_connected", "gauge", "1 while connected to the MQTT broker.",
                   [(None, mqtt["connected"])])
        out.family("maskgate_mqtt_sent_total", "counter", "MQTT messages acknowledged by the broker.",
                   [(None, mqtt["sent"])])
        out.family("maskgate_mqtt_dropped_total", "counter",
                   "MQTT messages dropped, oldest first, while the broker was away and the buffer full.",
                   [(None, mqtt["dropped"])])
        out.family("maskgate_mqtt_buffered", "gauge", "MQTT messages waiting for the broker.",
                   [(None, mqtt["buffered"] + mqtt["inflight"])])
    clips = state.get("clips")
    if clips is not None:
        out.family("maskgate_clips_total", "counter", "Clips recorded.", [(None, clips["recorded"])])
    if stream is not None:
        out.family("maskgate_stream_clients", "gauge", "Viewers of the live stream now.",
                   [(None, stream.clients)])
        out.family("maskgate_stream_frames_total", "counter",
                   "Frames of the live stream JPEG-encoded (once for all viewers).",
                   [(None, stream.encoded)])
    if histograms:
        name = "maskgate_stage_latency_seconds"
        out.family(name, "histogram", "Latency of each stage of the loop, per call.", [])
        bounds = [repr(b) for b in BUCKETS] + ["+Inf"]
        for stage, (cumulative, total, count) in histograms.items():
            for bound, n in zip(bounds, cumulative):
                out.sample(name + "_bucket", {"stage": stage, "le": bound}, n)
            out.sample(name + "_sum", {"stage": stage}, float(total))
            out.sample(name + "_count", {"stage": stage}, count)
    return "\n".join(out.lines) + "\n"
