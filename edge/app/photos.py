"""Still-photo mode (the street-photo module): images in, annotated images + one JSON out.

Every face of every image is detected and classified (no tracker: stills are
independent). The annotated copies keep their file names in the output folder; the JSON
maps each image name to its faces. An image that cannot be decoded or analysed is
logged and skipped; the others go on.
"""
import collections
import io
import json
import logging
import os
import sys

import cv2

from edge.app import overlay
from edge.app.assemble import build_analyzer, input_path
from edge.app.events import FaceSaver
from edge.errors import ConfigError
from edge.infer.faces import Face, count_labels
from edge.io.sources import open_source

log = logging.getLogger(__name__)

# Annotated copies of smaller photos are drawn enlarged to this long side (px), so that the
# labels and the status line stay legible without covering the faces (fmd's and webcam
# photos are 100-300 px); faces.json keeps the photo's own coordinates.
MIN_DRAWN_SIDE = 640


def output_folder(config):
    """The first output that is a folder path (not a display or network URI), or None."""
    for uri in config["outputs"]:
        if "://" not in uri and uri != "none":
            return uri[len("file://"):] if uri.startswith("file://") else uri
    return None


def face_record(face):
    """A face in the photo JSON: box (xyxy px), label, score, detector score."""
    record = face.to_dict()
    record.pop("track")
    return record


def for_drawing(image, faces):
    """(image, faces) enlarged to ``MIN_DRAWN_SIDE`` where the photo is smaller; else as they are."""
    scale = float(MIN_DRAWN_SIDE) / max(image.shape[:2])
    if scale <= 1:
        return image, faces
    size = (int(round(image.shape[1] * scale)), int(round(image.shape[0] * scale)))
    enlarged = [Face(f.box * scale, f.det_score, f.probs, f.label, f.score, f.track) for f in faces]
    return cv2.resize(image, size, interpolation=cv2.INTER_CUBIC), enlarged


def analyze_images(analyzer, source, should_stop=None):
    """Yield (name, image, faces) for every image of ``source``; failures logged and skipped."""
    while source.is_streaming and not (should_stop and should_stop()):
        frame = source.read(timeout=1.0)
        if frame is None:
            continue
        name = frame.name or "frame_%06d.jpg" % frame.index
        try:
            faces = analyzer.analyze(frame.image)
        except Exception:  # noqa: one unreadable photo must not end the run
            log.exception("skipping %s: analysis failed", name)
            continue
        yield name, frame.image, faces


def run(config, should_stop=None):
    """Analyse the input's images, write annotated copies and the faces JSON; returns 0."""
    folder = output_folder(config)
    inputs = input_path(config)
    if folder and os.path.isdir(inputs) and os.path.realpath(folder) == os.path.realpath(inputs):
        raise ConfigError("still-photo output folder %s is the input folder: the annotated "
                          "copies would overwrite the photos; name another folder" % folder)
    if folder and not os.path.isdir(folder):
        os.makedirs(folder)
    saver = FaceSaver(config["events"]["faces_dir"]) if config["events"]["save_faces"] else None
    results = collections.OrderedDict()
    totals = count_labels([])
    analyzer = build_analyzer(dict(config, baseline=False), still=True)
    log.info("still photos: %r", analyzer.detector)  # which passes run (the flip pass: photos only by default)
    source = open_source(config["input"])
    try:
        for name, image, faces in analyze_images(analyzer, source, should_stop):
            counts = count_labels(faces)
            for label, n in counts.items():
                totals[label] += n
            results[name] = [face_record(f) for f in faces if f.label is not None]
            if saver is not None:
                for face in faces:
                    saver.save(image, face, len(results))
            if folder:
                drawn = overlay.draw(*for_drawing(image, faces), fps=None, counts=counts,
                                     blur=config["overlay"]["blur_faces"], boxes=config["overlay"]["enabled"])
                path = os.path.join(folder, name)
                if not cv2.imwrite(path, drawn):
                    log.error("could not write %s", path)
    finally:
        source.close()
        analyzer.close()
    _write_json(results, config["events"]["path"], folder)
    log.info("%d image(s), faces: %s", len(results),
             ", ".join("%s %d" % item for item in totals.items()))
    return 0


def _write_json(results, path, folder):
    """To --events PATH ('-' = stdout), else OUTPUT/faces.json, else stdout."""
    text = json.dumps(results, indent=1) + "\n"
    if path is None and folder:
        path = os.path.join(folder, "faces.json")
    if path is None or path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    with io.open(path, "w", encoding="utf-8") as stream:
        stream.write(text)
    log.info("faces written to %s", path)
