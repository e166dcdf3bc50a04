"""A run built from the configuration, once: the service, ``edge-bench``, still-photo mode and
``edge.evaluate`` all assemble their models, input, outputs and loop here, so they cannot
drift apart (which outputs open, at which frame rate, with which tracker settings).
``VideoRun.reload`` applies a new configuration to a running video (the service's SIGHUP).
"""
import logging
import os

from edge.app.events import EventWriter, FaceSaver, TrackIds
from edge.app.pipeline import Pipeline
from edge.common import IMAGE_EXTENSIONS, resolve_path
from edge.errors import ConfigError, SinkError
from edge.infer.analyzer import FaceAnalyzer
from edge.infer.classify.loader import load_classifier
from edge.infer.detect import create_detector
from edge.infer.detectors.retinaface_format import LARGEST_ANCHOR
from edge.infer.samples import shipped_faces
from edge.infer.track import Tracker
from edge.io.sinks import open_sinks
from edge.io.sources import first_frames, fps_from, open_source

log = logging.getLogger(__name__)

# Frame rate of video outputs when neither the settings nor the input say one.
FALLBACK_FPS = 30.0


def build_analyzer(config, timer=None, still=False):
    """Load the detector and classifier named in ``config`` into a FaceAnalyzer.

    ``still``: for still photos, where ``detector.flip_pass`` null means on (for video, off).

    A TensorRT engine built on first use is checked on the face crops shipped beside the
    model and reports its progress through this module's logger.
    Raises ModelError / ConfigError (from the inference modules) with what to do.
    """
    det, clf = config["detector"], config["classifier"]
    options = dict((key, det[key]) for key in ("input_size", "max_upscale") if det[key] is not None)
    if det["model"] is not None:
        options["model"] = resolve_path(det["model"])
    model = resolve_path(clf["model"])
    faces = shipped_faces(model)  # the real crops every new engine is checked on
    if det["name"] == "retinaface":
        options.update(backend=det["backend"], engine_cache=clf["engine_cache"], verify_faces=faces)
        if det["large_anchor_floor"] is not None:
            options["anchor_confidence"] = {LARGEST_ANCHOR: det["large_anchor_floor"]}
    elif det["backend"] == "trt":
        raise ConfigError("detector.backend trt: only the retinaface detector has a TensorRT engine "
                          "(detector.name is %s)" % det["name"])
    elif det["large_anchor_floor"] is not None:
        raise ConfigError("detector.large_anchor_floor: only the retinaface detector has one "
                          "(detector.name is %s)" % det["name"])
    if det["name"] in ("retinaface", "retinaface-wider"):  # the others search every scale anyway
        options["close_up_pass"] = det["close_up_pass"]
    flip_pass = still if det["flip_pass"] is None else det["flip_pass"]
    # models_dir None: the detectors' default ($MASKGATE_DETECTORS, else models/detectors).
    detector = create_detector(det["name"], models_dir=resolve_path(det["models_dir"]),
                               confidence=det["confidence"], min_size=det["min_size"],
                               nms_iou=det["nms_iou"], flip_pass=flip_pass, **options)
    classifier = load_classifier(model, backend=clf["backend"], max_batch=clf["max_batch"],
                                 engine_cache=clf["engine_cache"], verify_images=faces,
                                 log=log.info)
    return FaceAnalyzer(detector, classifier, max_batch=1 if config["baseline"] else clf["max_batch"],
                        timer=timer, non_compliant_threshold=clf["non_compliant_threshold"])


def build_pipeline(config, analyzer, sinks=(), events=None, health=None, saver=None, ops=None,
                   tracker=None, next_id=None):
    """A Pipeline with the tracker, intervals and overlay settings of ``config``.

    ``ops``: the operator's hub (people, alerts, MQTT) or None. ``tracker``: one to keep
    (its tracks go on); else a new one whose track ids come from ``next_id`` (default 1, 2, ...).
    """
    trk = config["tracker"]
    if tracker is None:
        tracker = Tracker(iou=trk["iou"], max_missed=trk["max_missed"], min_hits=trk["min_hits"],
                          vote=trk["vote"], next_id=next_id)
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


def sink_options(config):
    """The options every output is opened with (bit rate, quality, credentials)."""
    out = config["output"]
    return {"bitrate": out["bitrate"], "quality": out["quality"], "http_token": out["http_token"],
            "rtsp_user": out["rtsp_user"], "rtsp_password": out["rtsp_password"]}


def open_health(config, web=None):
    """The health file and endpoint (on ``web``, the one HTTP server) the config asks for, or None."""
    h = config["health"]
    if not (h["file"] or web is not None):
        return None
    from edge.app.health import Health
    return Health(path=h["file"], server=web)


def open_events(config, run_id, track_ids=None, at_least=1):
    """The EventWriter of ``config`` (None without ``events.path``)."""
    ev = config["events"]
    if not ev["path"]:
        return None
    return EventWriter(ev["path"], ev["flush_every"], max_bytes=int(ev["rotate_mb"] * (1 << 20)),
                       keep=ev["keep"], compress=ev["compress"], run_id=run_id, track_ids=track_ids,
                       at_least=at_least)


def _differs(old, new, *keys):
    """Whether any of the top-level ``keys`` (sections or settings) differs between configs."""
    return any(old.get(k) != new.get(k) for k in keys)


def _model_settings(config):
    """What the loaded models depend on (not the loop's intervals, which a reload just applies)."""
    det = dict((k, v) for k, v in config["detector"].items() if k not in ("every", "scene_cut"))
    clf = dict((k, v) for k, v in config["classifier"].items() if k != "every")
    return det, clf, config["baseline"]


def _loop_settings(config):
    return (config["tracker"], config["overlay"], config["detector"]["every"], config["detector"]["scene_cut"],
            config["classifier"]["every"], config["events"]["save_faces"], config["events"]["faces_dir"])


def _operator_settings(config):
    """What the HTTP server and the operator's hub (people, alerts, MQTT, page, clips) depend on."""
    mqtt = dict((k, v) for k, v in config["events"].items() if k.startswith("mqtt"))
    return (config["health"], config["alerts"], config["people"], config["web"], config["clips"], mqtt,
            config["tracker"]["min_hits"], config["output"]["quality"])


def _is_network(sink):
    return str(sink.uri).startswith(("rtsp://", "http://"))


class VideoRun(object):
    """Everything one video run needs, opened from ``config`` in order and closed in one place.

    ``outputs``: output URIs (default: ``output_uris(config)``); ``analyzer``: models to
    reuse (they are then not closed here); ``health``: open the health file/endpoint;
    ``run_id``: the id on every events line (default: a new one). A file is read two frames
    ahead (``first``) for its frame rate; a live source is never waited on here, so a camera
    absent at boot does not hold the service back. Attributes: config, analyzer, source,
    first, fps, sinks, events, health, web (the HTTP server), ops (the operator's hub:
    people, alerts, MQTT), ops_sinks (its outputs: the page's stream, clips), pipeline,
    track_ids, reloads.
    """

    def __init__(self, config, outputs=None, analyzer=None, timer=None, health=True, should_stop=None,
                 run_id=None):
        self.config, self.run_id, self.reloads, self.track_ids = config, run_id, 0, None
        self._fixed_outputs = None if outputs is None else list(outputs)
        self._want_health = health
        self.analyzer, self._owns_analyzer = analyzer, analyzer is None
        self.source = self.events = self.health = self.pipeline = None
        self.web = self.ops = None
        self.sinks, self.ops_sinks, self.first, self._sink_keys = [], [], [], []
        try:
            self.analyzer = analyzer or build_analyzer(config, timer)
            self.source, self.first, self._measured_fps = self._open_input(config, should_stop)
            if health:
                self.web = open_web(config)
                self.health = open_health(config, self.web)
            self.fps = self._fps(config, self._measured_fps)
            self._sink_keys = self._wanted_sinks(config, self.fps)
            self.sinks = open_sinks([k[0] for k in self._sink_keys], self.fps, **sink_options(config))
            self.events = open_events(config, run_id)
            self.run_id = self.events.run_id if self.events else run_id
            self.track_ids = self.events.track_ids if self.events else TrackIds()
            self.ops, self.ops_sinks = build_ops(config, self.web, self.analyzer.timer)
            self.pipeline = build_pipeline(config, self.analyzer, self.sinks + self.ops_sinks, self.events,
                                           self.health, self._saver(config), self.ops, next_id=self.track_ids)
        except BaseException:
            self.close()
            raise

    # -- opening parts ---------------------------------------------------------------------

    @staticmethod
    def _open_input(config, should_stop=None):
        """(source, frames read ahead, the file's measured frame rate or None)."""
        source = open_source(config["input"], **config["source"])
        try:
            first = [] if source.is_live else first_frames(source, 2, should_stop)
        except BaseException:
            source.close()
            raise
        return source, first, None if source.is_live else fps_from(first)

    @staticmethod
    def _fps(config, measured):
        """The outputs' frame rate: the setting, else the file's, else the camera's, else 30."""
        return config["output"]["fps"] or measured or config["source"]["fps"] or FALLBACK_FPS

    def _wanted_sinks(self, config, fps):
        """[(uri, options, fps)] of the outputs ``config`` asks for: an output whose triple is
        unchanged is kept open across a reload."""
        uris = output_uris(config) if self._fixed_outputs is None else self._fixed_outputs
        options = tuple(sorted(sink_options(config).items()))
        return [(uri, options, fps) for uri in uris]

    @staticmethod
    def _saver(config):
        ev = config["events"]
        saver = FaceSaver(ev["faces_dir"]) if ev["save_faces"] else None
        if saver is not None and config["overlay"]["blur_faces"]:
            log.warning("events.save_faces stores face crops unblurred although "
                        "overlay.blur_faces is on (it blurs the video, stream, page and clips)")
        return saver

    # -- reload -----------------------------------------------------------------------------

    def reload(self, config):
        """Apply ``config`` to the running video; returns {"changed": [...], "kept": [...]}.

        Only the parts whose settings changed are reopened: the models (detector,
        classifier, baseline), the input (input, source: a camera whose settings did not
        change is kept, with its tracks), the outputs (outputs, headless, output, frame
        rate), health with the HTTP server and the operator's hub (health, alerts, people,
        web, clips, MQTT: the people counts then start again) and the events file (reopened
        when unchanged, so that an outside rotation is picked up); the loop's settings
        (tracker, intervals, overlay) are always applied.
        New parts are opened before the old ones are closed; where both cannot be open at
        once (one camera, one port) the old one is closed first and reopened if the new one
        fails. So a config that cannot be applied (a missing model, a port in use) raises
        with the run exactly as it was, and nothing written is lost either way.
        """
        old = self.config
        if is_photo_input(config):
            raise ConfigError("input %s is a photo or a folder: still-photo mode is not entered by a "
                              "reload (restart the service)" % config["input"])
        new, undo, changed = {}, [], []
        if _loop_settings(old) != _loop_settings(config):
            changed.append("loop")
        try:
            if self._owns_analyzer and _model_settings(old) != _model_settings(config):
                changed.append("models")
                new["analyzer"] = build_analyzer(config, self.analyzer.timer)
            source_changed = _differs(old, config, "input", "source")
            if source_changed:
                changed.append("input")
                new["source"], new["first"], new["measured_fps"] = self._replace_input(config, undo)
            new["fps"] = self._fps(config, new["measured_fps"] if source_changed else self._measured_fps)
            wanted = self._wanted_sinks(config, new["fps"])
            if wanted != self._sink_keys:
                changed.append("outputs")
                new["sinks"], new["removed"] = self._replace_outputs(config, wanted, new["fps"], undo)
            if self._want_health and _operator_settings(old) != _operator_settings(config):
                changed.append("health")
                new["web"], new["health"], new["ops"], new["ops_sinks"] = self._replace_operator(config, undo)
            if self.events is not None:
                self.events.flush()  # whole lines on disk before another writer opens the file
            same_file = self.events is not None and self.events.path == config["events"]["path"]
            if _differs(old, config, "events"):
                changed.append("events")
                new["events"] = open_events(config, self.run_id,
                                            track_ids=self.track_ids if same_file else None,
                                            at_least=self.track_ids.next)
            saver = self._saver(config)
        except BaseException:
            self._roll_back(new, undo)
            raise
        self._commit(config, new, saver, source_changed, same_file)
        kept = [p for p in ("models", "input", "outputs", "health", "events", "loop") if p not in changed]
        return {"changed": changed, "kept": kept}

    def _replace_input(self, config, undo):
        """Open the new input while the old one runs; a camera asked for in another mode is
        busy until the old one lets go, so that one is closed first (reopened on failure)."""
        old = self.config
        if not (self.source.is_live and config["input"] == old["input"]):
            return self._open_input(config)
        self.source.close()
        undo.append(lambda: setattr(self, "source", self._open_input(old)[0]))
        return self._open_input(config)

    def _replace_outputs(self, config, wanted, fps, undo):
        """(the new sink list, the old sinks to close) with unchanged outputs kept open."""
        keep = [(key, sink) for key, sink in zip(self._sink_keys, self.sinks) if key in wanted]
        kept_keys = [k for k, _ in keep]
        added = [k for k in wanted if k not in kept_keys]
        removed = [s for k, s in zip(self._sink_keys, self.sinks) if k not in wanted]
        options = sink_options(config)
        try:
            opened = open_sinks([k[0] for k in added], fps, **options)
        except SinkError as exc:
            network = [s for s in removed if _is_network(s)]
            if not network:
                raise
            # A port the old output holds (rtsp://@:8554/out exposed as rtsp://...0.0.0.0:8554/out).
            log.info("reload: %s; trying again with the old network outputs closed", exc)
            old_keys = dict((id(s), k) for k, s in zip(self._sink_keys, self.sinks))
            for sink in network:
                sink.close()
                undo.append(self._reopener(sink, old_keys[id(sink)]))
            removed = [s for s in removed if s not in network]
            opened = open_sinks([k[0] for k in added], fps, **options)
        by_key = dict(keep)
        by_key.update(zip(added, opened))
        return [(k, by_key[k]) for k in wanted], removed

    def _reopener(self, sink, key):
        def reopen():
            uri, options, fps = key
            fresh = open_sinks([uri], fps, **dict(options))[0]
            self.sinks = [fresh if s is sink else s for s in self.sinks]
        return reopen

    def _replace_operator(self, config, undo):
        """(web, health, ops, ops_sinks) of ``config``, health keeping the old fields. The old
        HTTP server holds its port, so the old parts are closed first (their people counted
        and sent) and reopened if the new ones fail."""
        fields = self.health.fields() if self.health is not None else {}
        old_config = self.config
        self._close_operator()

        def reopen():
            self.web, self.health, self.ops, self.ops_sinks = self._open_operator(old_config, fields)
        undo.append(reopen)
        return self._open_operator(config, fields)

    def _open_operator(self, config, fields):
        web = health = None
        try:
            web = open_web(config)
            health = open_health(config, web)
            if health is not None:
                health.update(**fields)
            ops, ops_sinks = build_ops(config, web, self.analyzer.timer)
        except BaseException:
            for part in (health, web):
                if part is not None:
                    part.close()
            raise
        return web, health, ops, ops_sinks

    def _close_operator(self):
        """Count the last people and flush MQTT, close the hub's outputs, health and the HTTP server."""
        if self.ops is not None:
            self.ops.close()
        for sink in self.ops_sinks:
            sink.close()
        for part in (self.health, self.web):
            if part is not None:
                part.close()
        self.web = self.health = self.ops = None
        self.ops_sinks = []

    def _roll_back(self, new, undo):
        """Close what a failed reload opened and reopen what it closed."""
        if "analyzer" in new:
            new["analyzer"].close()
        if "source" in new:
            new["source"].close()
        for _, sink in new.get("sinks", []):
            if sink not in self.sinks:
                sink.close()
        if new.get("events") is not None:
            new["events"].close(keep_ids=new["events"].track_ids is self.track_ids)
        if new.get("ops") is not None:
            new["ops"].close()
        for sink in new.get("ops_sinks", []):
            sink.close()
        for part in ("health", "web"):
            if new.get(part) is not None:
                new[part].close()
        for reopen in reversed(undo):
            try:
                reopen()
            except Exception:  # noqa: the rest is still restored
                log.exception("reload: could not restore a part of the old configuration")

    def _commit(self, config, new, saver, source_changed, same_file):
        """Swap the new parts in and close the old ones they replace."""
        if "sinks" in new:
            for sink in new["removed"]:
                sink.close()  # a video file plays to its last frame
            self._sink_keys = [k for k, _ in new["sinks"]]
            self.sinks = [s for _, s in new["sinks"]]
        if "source" in new:
            self.source.close()
            self.source, self.first, self._measured_fps = new["source"], new["first"], new["measured_fps"]
        self.fps = new["fps"]
        if "health" in new:
            self.web, self.health, self.ops, self.ops_sinks = new["web"], new["health"], new["ops"], new["ops_sinks"]
        if "events" in new:
            if self.events is not None:
                self.events.close(keep_ids=same_file)
            if not same_file:
                self.track_ids.close()  # the exact next id is recorded (no-op when closed)
            self.events = new["events"]
            self.track_ids = self.events.track_ids if self.events else TrackIds(at_least=self.track_ids.next)
        elif self.events is not None:
            self.events.reopen()
        models_changed = "analyzer" in new
        if models_changed:
            self.analyzer.close()  # only an owned analyzer is ever replaced
            self.analyzer = new["analyzer"]
        old_pipeline, old_config = self.pipeline, self.config
        same_scene = not source_changed
        # Tracks go on (their ids and votes) unless the picture, the models or the tracker changed.
        tracker = old_pipeline.tracker if same_scene and not models_changed and not _differs(
            old_config, config, "tracker", "baseline") else None
        if tracker is not None:
            tracker.next_id = self.track_ids  # a new events file's ids: never below those handed out
        self.pipeline = build_pipeline(config, self.analyzer, self.sinks + self.ops_sinks, self.events,
                                       self.health, saver, self.ops, tracker=tracker, next_id=self.track_ids)
        self.pipeline.adopt(old_pipeline, same_scene)
        self.config = config
        self.reloads += 1

    # -- closing ----------------------------------------------------------------------------

    def close(self):
        """Count the last people and flush MQTT, flush and close outputs and events, release
        the source, health, the HTTP server and (owned) models."""
        if self.ops is not None:
            self.ops.close()
        if self.pipeline is not None:
            self.pipeline.close()  # sinks and events
        else:
            for sink in self.sinks + self.ops_sinks:
                sink.close()
            if self.events is not None:
                self.events.close()
        self.pipeline, self.sinks, self.ops_sinks, self.events = None, [], [], None
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
            self.analyzer.close()
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
