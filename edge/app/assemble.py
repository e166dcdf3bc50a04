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


def build_pipeline(config, analyzer, sinks=(), events=None, health=None, saver=None, tracker=None,
                   next_id=None):
    """A Pipeline with the tracker, intervals and overlay settings of ``config``.

    ``tracker``: one to keep (its tracks go on); else a new one whose track ids come from
    ``next_id`` (default 1, 2, ...).
    """
    trk = config["tracker"]
    if tracker is None:
        tracker = Tracker(iou=trk["iou"], max_missed=trk["max_missed"], min_hits=trk["min_hits"],
                          vote=trk["vote"], next_id=next_id)
    return Pipeline(analyzer, tracker, detect_every=config["detector"]["every"],
                    classify_every=config["classifier"]["every"], baseline=config["baseline"],
                    draw=config["overlay"]["enabled"], blur=config["overlay"]["blur_faces"],
                    sinks=sinks, events=events, health=health, saver=saver,
                    scene_cut=config["detector"]["scene_cut"])


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


def open_health(config):
    """The health file and endpoint the config asks for, or None."""
    h = config["health"]
    if not (h["file"] or h["http"]):
        return None
    from edge.app.health import Health
    return Health(path=h["file"], http=h["http"], token=h["token"])


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


def _is_network(sink):
    return str(sink.uri).startswith(("rtsp://", "http://"))


class VideoRun(object):
    """Everything one video run needs, opened from ``config`` in order and closed in one place.

    ``outputs``: output URIs (default: ``output_uris(config)``); ``analyzer``: models to
    reuse (they are then not closed here); ``health``: open the health file/endpoint;
    ``run_id``: the id on every events line (default: a new one). A file is read two frames
    ahead (``first``) for its frame rate; a live source is never waited on here, so a camera
    absent at boot does not hold the service back. Attributes: config, analyzer, source,
    first, fps, sinks, events, health, pipeline, track_ids, reloads.
    """

    def __init__(self, config, outputs=None, analyzer=None, timer=None, health=True, should_stop=None,
                 run_id=None):
        self.config, self.run_id, self.reloads, self.track_ids = config, run_id, 0, None
        self._fixed_outputs = None if outputs is None else list(outputs)
        self._want_health = health
        self.analyzer, self._owns_analyzer = analyzer, analyzer is None
        self.source = self.events = self.health = self.pipeline = None
        self.sinks, self.first, self._sink_keys = [], [], []
        try:
            self.analyzer = analyzer or build_analyzer(config, timer)
            self.source, self.first, self._measured_fps = self._open_input(config, should_stop)
            self.health = open_health(config) if health else None
            self.fps = self._fps(config, self._measured_fps)
            self._sink_keys = self._wanted_sinks(config, self.fps)
            self.sinks = open_sinks([k[0] for k in self._sink_keys], self.fps, **sink_options(config))
            self.events = open_events(config, run_id)
            self.run_id = self.events.run_id if self.events else run_id
            self.track_ids = self.events.track_ids if self.events else TrackIds()
            self.pipeline = build_pipeline(config, self.analyzer, self.sinks, self.events, self.health,
                                           self._saver(config), next_id=self.track_ids)
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
        return FaceSaver(ev["faces_dir"]) if ev["save_faces"] else None

    # -- reload -----------------------------------------------------------------------------

    def reload(self, config):
        """Apply ``config`` to the running video; returns {"changed": [...], "kept": [...]}.

        Only the parts whose settings changed are reopened: the models (detector,
        classifier, baseline), the input (input, source: a camera whose settings did not
        change is kept, with its tracks), the outputs (outputs, headless, output, frame
        rate), health and the events file (reopened when unchanged, so that an outside
        rotation is picked up); the loop's settings (tracker, intervals, overlay) are always
        applied.
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
            if self._want_health and _differs(old, config, "health"):
                changed.append("health")
                new["health"] = self._replace_health(config, undo)
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

    def _replace_health(self, config, undo):
        """A new Health with the old fields (the old one holds its port: closed first)."""
        fields = self.health.fields() if self.health is not None else {}
        old_config = self.config
        if self.health is not None:
            self.health.close()

            def reopen():
                self.health = open_health(old_config)
                if self.health is not None:
                    self.health.update(**fields)
            undo.append(reopen)
        health = open_health(config)
        if health is not None:
            health.update(**fields)
        return health

    def _roll_back(self, new, undo):
        """Close what a failed reload opened and reopen what it closed."""
        if "analyzer" in new:
            new["analyzer"].classifier.close()
        if "source" in new:
            new["source"].close()
        for _, sink in new.get("sinks", []):
            if sink not in self.sinks:
                sink.close()
        if new.get("events") is not None:
            new["events"].close(keep_ids=new["events"].track_ids is self.track_ids)
        if new.get("health") is not None:
            new["health"].close()
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
            self.health = new["health"]
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
            self.analyzer.classifier.close()  # only an owned analyzer is ever replaced
            self.analyzer = new["analyzer"]
        old_pipeline, old_config = self.pipeline, self.config
        same_scene = not source_changed
        # Tracks go on (their ids and votes) unless the picture, the models or the tracker changed.
        tracker = old_pipeline.tracker if same_scene and not models_changed and not _differs(
            old_config, config, "tracker", "baseline") else None
        if tracker is not None:
            tracker.next_id = self.track_ids  # a new events file's ids: never below those handed out
        self.pipeline = build_pipeline(config, self.analyzer, self.sinks, self.events, self.health, saver,
                                       tracker=tracker, next_id=self.track_ids)
        self.pipeline.adopt(old_pipeline, same_scene)
        self.config = config
        self.reloads += 1

    # -- closing ----------------------------------------------------------------------------

    def close(self):
        """Flush and close outputs and events, release the source, health and (owned) models."""
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
        if self.analyzer is not None and self._owns_analyzer:
            self.analyzer.classifier.close()
            self.analyzer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
