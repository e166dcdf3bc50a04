"""A run built from the configuration, once: the service, ``edge-bench``, still-photo mode and
``edge.evaluate`` all assemble their models, input, outputs and loop here, so they cannot
drift apart (which outputs open, at which frame rate, with which tracker settings).
"""
import logging
import os

from edge.app.events import EventWriter, FaceSaver
from edge.app.pipeline import Pipeline
from edge.common import IMAGE_EXTENSIONS, resolve_path
from edge.infer.analyzer import FaceAnalyzer
from edge.infer.classify.loader import load_classifier
from edge.infer.detect import create_detector
from edge.infer.samples import shipped_faces
from edge.infer.track import Tracker
from edge.io.sinks import open_sinks
from edge.io.sources import first_frames, fps_from, open_source

log = logging.getLogger(__name__)

# Frame rate of video outputs when neither the settings nor the input say one.
FALLBACK_FPS = 30.0


def build_analyzer(config, timer=None):
    """Load the detector and classifier named in ``config`` into a FaceAnalyzer.

    A TensorRT engine built on first use is checked on the face crops shipped beside the
    model and reports its progress through this module's logger.
    Raises ModelError / ConfigError (from the inference modules) with what to do.
    """
    det, clf = config["detector"], config["classifier"]
    options = {} if det["input_size"] is None else {"input_size": det["input_size"]}
    # models_dir None: the detectors' default ($MASKGATE_DETECTORS, else models/detectors).
    detector = create_detector(det["name"], models_dir=resolve_path(det["models_dir"]),
                               confidence=det["confidence"], min_size=det["min_size"],
                               nms_iou=det["nms_iou"], **options)
    model = resolve_path(clf["model"])
    classifier = load_classifier(model, backend=clf["backend"], max_batch=clf["max_batch"],
                                 engine_cache=clf["engine_cache"], verify_images=shipped_faces(model),
                                 log=log.info)
    return FaceAnalyzer(detector, classifier, max_batch=1 if config["baseline"] else clf["max_batch"],
                        timer=timer)


def build_pipeline(config, analyzer, sinks=(), events=None, health=None, saver=None, ops=None):
    """A Pipeline with the tracker, intervals and overlay settings of ``config``."""
    trk = config["tracker"]
    tracker = Tracker(iou=trk["iou"], max_missed=trk["max_missed"], min_hits=trk["min_hits"],
                      vote=trk["vote"])
    return Pipeline(analyzer, tracker, detect_every=config["detector"]["every"],
                    classify_every=config["classifier"]["every"], baseline=config["baseline"],
                    draw=config["overlay"]["enabled"], blur=config["overlay"]["blur_faces"],
                    sinks=sinks, events=events, health=health, saver=saver,
                    scene_cut=config["detector"]["scene_cut"], ops=ops)


def input_path(config):
    """The input as a file system path (``file://`` stripped), or the URI as given."""
    uri = config["input"]
    return uri[len("file://"):] if uri.startswith("file://") else uri


def is_photo_input(config):
    """Still-photo mode: --photo, or an input that is an image file or a folder."""
    path = input_path(config)
    return config["photo"] or os.path.isdir(path) or path.lower().endswith(IMAGE_EXTENSIONS)


def output_uris(config):
    """The outputs to open: display://0 by default, none when headless."""
    uris = list(config["outputs"]) or ([] if config["headless"] else ["display://0"])
    if config["headless"]:
        uris = [u for u in uris if not u.startswith("display://")]
    return [u for u in uris if u != "none"]


def open_health(config, web=None):
    """The health file and endpoint (on ``web``, the one HTTP server) the config asks for, or None."""
    h = config["health"]
    if not (h["file"] or web is not None):
        return None
    from edge.app.health import Health
    return Health(path=h["file"], server=web)


class VideoRun(object):
    """Everything one video run needs, opened from ``config`` in order and closed in one place.

    ``outputs``: output URIs (default: ``output_uris(config)``); ``analyzer``: models to
    reuse (they are then not closed here); ``health``: open the health file/endpoint.
    A file is read two frames ahead (``first``) for its frame rate; a live source is never
    waited on here, so a camera absent at boot does not hold the service back. Attributes:
    analyzer, source, first, fps, sinks, events, health, web (the HTTP server), ops (the
    operator's hub: people, alerts, MQTT), pipeline.
    """

    def __init__(self, config, outputs=None, analyzer=None, timer=None, health=True, should_stop=None):
        self.analyzer, self._owns_analyzer = analyzer, analyzer is None
        self.source = self.events = self.health = self.pipeline = None
        self.web = self.ops = None
        self.sinks, self.first = [], []
        try:
            self.analyzer = analyzer or build_analyzer(config, timer)
            self.source = open_source(config["input"], **config["source"])
            self.web = open_web(config) if health else None
            self.health = open_health(config, self.web) if health else None
            out = config["output"]
            if not self.source.is_live:
                self.first = first_frames(self.source, 2, should_stop)
            self.fps = out["fps"] or (None if self.source.is_live else fps_from(self.first)) \
                or config["source"]["fps"] or FALLBACK_FPS
            self.sinks = open_sinks(output_uris(config) if outputs is None else list(outputs), self.fps,
                                    bitrate=out["bitrate"], quality=out["quality"], token=out["token"])
            ev = config["events"]
            self.events = EventWriter(ev["path"], ev["flush_every"]) if ev["path"] else None
            saver = FaceSaver(ev["faces_dir"]) if ev["save_faces"] else None
            if saver is not None and config["overlay"]["blur_faces"]:
                log.warning("events.save_faces stores face crops unblurred although "
                            "overlay.blur_faces is on (it blurs the video, stream, page and clips)")
            self.ops, extra = build_ops(config, self.web, self.analyzer.timer)
            self.sinks += extra
            self.pipeline = build_pipeline(config, self.analyzer, self.sinks, self.events, self.health, saver,
                                           self.ops)
        except BaseException:
            self.close()
            raise

    def close(self):
        """Count the last people and flush MQTT, flush and close outputs and events, release
        the source, health, the HTTP server and (owned) models."""
        if self.ops is not None:
            self.ops.close()
        if self.pipeline is not None:
            self.pipeline.close()  # sinks and events
        else:
            for sink in self.sinks:
                sink.close()
            if self.events is not None:
                self.events.close()
        self.pipeline, self.sinks, self.events = None, [], None
        if self.source is not None:
            self.source.close()
            self.source = None
        if self.health is not None:
            self.health.close()
            self.health = None
        if self.web is not None:
            self.web.close()
            self.web = None
        if self.analyzer is not None and self._owns_analyzer:
            self.analyzer.classifier.close()
            self.analyzer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- the operator's side (edge.ops): people, alerts, MQTT, /metrics, the page, clips ----------

def open_web(config):
    """The one HTTP server (``health.http``) for /health, /metrics and the page, or None."""
    h = config["health"]
    if not h["http"]:
        return None
    from edge.ops.web import WebServer
    return WebServer(h["http"], h["token"])


def build_ops(config, web=None, timer=None):
    """The operator's hub of ``config`` and the outputs it adds to the loop's sinks.

    People are always counted (the end-of-run log says how many); MQTT, clips and the
    page's stream only when configured. With ``web``, /metrics, /api/state and (web.page)
    the page at / and its stream at /stream.mjpg are mounted on it. Returns (hub, sinks).
    """
    from edge.ops.alerts import AlertRules
    from edge.ops.hub import OpsHub
    from edge.ops.people import PeopleCounter
    ev, al, pe, wb, cl = (config[k] for k in ("events", "alerts", "people", "web", "clips"))
    people = PeopleCounter(max(pe["min_detections"], config["tracker"]["min_hits"]),
                           pe["settle_votes"], pe["window"])
    rules = AlertRules(al["non_compliant"], al["min_compliance"], al["min_people"], al["hold_off"])
    sinks, mqtt, clips = [], None, None
    try:
        if ev["mqtt"]:
            from edge.ops.mqtt import MqttPublisher
            mqtt = MqttPublisher(ev["mqtt"], ca_file=ev["mqtt_ca"], buffer=ev["mqtt_buffer"])
        if cl["dir"]:
            from edge.ops.clips import ClipRecorder
            clips = ClipRecorder(cl["dir"], cl["before"], cl["after"], cl["fps"], cl["width"],
                                 cl["max_count"], cl["max_mb"])
            sinks.append(clips)
    except BaseException:
        if mqtt is not None:
            mqtt.close(0.0)
        raise
    hub = OpsHub(people, rules, mqtt, clips, status_every=ev["mqtt_status_every"],
                 chart_step=wb["chart_step"])
    if web is not None:
        from edge.io.netsinks import MjpegFeed
        from edge.ops import metrics
        from edge.ops.web import json_route, page_route, send

        feed = MjpegFeed("page:/stream.mjpg", config["output"]["quality"], wb["stream_fps"]) \
            if wb["page"] else None

        def serve_metrics(handler, query):
            text = metrics.render(hub.snapshot(full=False), timer.histograms() if timer else None, feed)
            send(handler, 200, text, metrics.CONTENT_TYPE)
        web.route("/metrics", serve_metrics)
        web.route("/api/state", json_route(hub.snapshot))
        if feed is not None:
            web.route("/", page_route())
            web.route("/stream.mjpg", lambda handler, query: feed.serve(handler))
            sinks.append(feed)
    return hub, sinks
