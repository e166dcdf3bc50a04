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


def build_pipeline(config, analyzer, sinks=(), events=None, health=None, saver=None):
    """A Pipeline with the tracker, intervals and overlay settings of ``config``."""
    trk = config["tracker"]
    tracker = Tracker(iou=trk["iou"], max_missed=trk["max_missed"], min_hits=trk["min_hits"],
                      vote=trk["vote"])
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


def open_health(config):
    """The health file and endpoint the config asks for, or None."""
    h = config["health"]
    if not (h["file"] or h["http"]):
        return None
    from edge.app.health import Health
    return Health(path=h["file"], http=h["http"], token=h["token"])


class VideoRun(object):
    """Everything one video run needs, opened from ``config`` in order and closed in one place.

    ``outputs``: output URIs (default: ``output_uris(config)``); ``analyzer``: models to
    reuse (they are then not closed here); ``health``: open the health file/endpoint.
    A file is read two frames ahead (``first``) for its frame rate; a live source is never
    waited on here, so a camera absent at boot does not hold the service back. Attributes:
    analyzer, source, first, fps, sinks, events, health, pipeline.
    """

    def __init__(self, config, outputs=None, analyzer=None, timer=None, health=True, should_stop=None):
        self.analyzer, self._owns_analyzer = analyzer, analyzer is None
        self.source = self.events = self.health = self.pipeline = None
        self.sinks, self.first = [], []
        try:
            self.analyzer = analyzer or build_analyzer(config, timer)
            self.source = open_source(config["input"], **config["source"])
            self.health = open_health(config) if health else None
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
            self.pipeline = build_pipeline(config, self.analyzer, self.sinks, self.events, self.health, saver)
        except BaseException:
            self.close()
            raise

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
