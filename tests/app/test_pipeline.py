"""The pipeline end to end on the shared video: real detector, real onnxruntime classifier."""
import json

import numpy as np
import pytest

from conftest import data_path
from edge.app import config as cfg
from edge.app import pipeline as pl
from edge.app.assemble import build_analyzer, build_pipeline
from edge.app.events import EventWriter
from edge.errors import ModelError
from edge.infer.analyzer import StageTimer

VIDEO = ("videos", "kaggle853_test_scenes.mp4")


def make_config(model_path, **overrides):
    overrides.setdefault("classifier.model", model_path)
    overrides.setdefault("classifier.backend", "ort")
    return cfg.load(overrides=overrides)


@pytest.fixture(scope="session")
def analyzer_factory(model_path):
    def make(**overrides):
        try:
            return build_analyzer(make_config(model_path, **overrides))
        except ModelError as exc:
            pytest.skip("detector or model not provisioned (run `make models`): %s" % exc)
    return make


def video_frames(count):
    from edge.io.sources import open_source
    source = open_source(data_path(*VIDEO))
    frames = []
    while len(frames) < count and source.is_streaming:
        frame = source.read(timeout=2.0)
        if frame is not None:
            frames.append(frame)
    source.close()
    return frames


class ListSource(object):
    """Frames already decoded, behind the Source interface (so tests reuse one decode)."""

    is_live = False

    def __init__(self, frames):
        self.frames = list(frames)
        self.state = "streaming"

    @property
    def is_streaming(self):
        return bool(self.frames)

    def read(self, timeout=1.0):
        return self.frames.pop(0) if self.frames else None


@pytest.fixture(scope="module")
def frames():
    return video_frames(30)


def test_analyzer_classifies_all_faces_of_a_frame_in_one_batch(analyzer_factory, frames):
    analyzer = analyzer_factory()
    faces = analyzer.analyze(frames[0].image)
    assert len(faces) >= 2, "the first scene of the video has several faces"
    assert analyzer.predict_calls == 1 and analyzer.classified == len(faces)
    for face in faces:
        assert face.label in analyzer.classes and 0 <= face.score <= 1
        assert abs(float(np.sum(face.probs)) - 1) < 1e-4
    one_by_one = analyzer_factory(baseline=True)
    again = one_by_one.analyze(frames[0].image)
    assert one_by_one.predict_calls == len(again) == len(faces)
    np.testing.assert_allclose([f.probs for f in again], [f.probs for f in faces], atol=1e-4)


def test_pipeline_writes_video_and_events(analyzer_factory, frames, tmp_path):
    from edge.io.sinks import open_sinks
    from edge.io.sources import open_source
    config = cfg.load(overrides={"detector.every": 2, "classifier.every": 5, "detector.scene_cut": 0})
    analyzer = analyzer_factory()
    video, events_path = str(tmp_path / "out.mp4"), str(tmp_path / "events.jsonl")
    pipeline = build_pipeline(config, analyzer, open_sinks([video], 10),
                                 EventWriter(events_path, flush_every=7))
    result = pl.run(pipeline, ListSource(frames))
    pipeline.close()
    assert result["frames"] == 30 and result["errors"] == 0
    assert result["stages"]["detect"]["count"] == 15   # every other frame
    assert set(result["stages"]) >= {"capture", "detect", "preprocess", "classify", "track", "draw", "write"}
    # Faces are classified when they appear and every 5 frames, not on every frame.
    assert 0 < result["classified"] < result["faces_per_frame"] * 30
    lines = [json.loads(line) for line in open(events_path)]
    assert [line["frame"] for line in lines] == list(range(30))
    for line in lines:
        assert sum(line["counts"].values()) == len(line["faces"])
        for face in line["faces"]:
            assert face["label"] in analyzer.classes and isinstance(face["track"], int)
    assert sum(len(line["faces"]) for line in lines) > 0
    # The video plays to its last frame.
    check = open_source(video)
    decoded = 0
    while check.is_streaming:
        decoded += check.read(timeout=2.0) is not None
    assert decoded == 30


def test_non_compliant_threshold_flags_more_faces_in_photos_and_the_video(analyzer_factory, frames, tmp_path):
    # The same real frames at the top class and at a low threshold: the labels of still
    # photos (analyze) and of the video's tracks (the pipeline's vote) both follow it.
    top, low = analyzer_factory(), analyzer_factory(**{"classifier.non_compliant_threshold": 0.05})
    assert top.non_compliant_threshold is None and low.non_compliant_threshold == 0.05

    def non_compliant(faces):
        return sum(f.label != "mask" for f in faces if f.label is not None)

    images = [f.image for f in frames[::10]]
    flagged_top = sum(non_compliant(top.analyze(image)) for image in images)
    flagged_low = sum(non_compliant(low.analyze(image)) for image in images)
    assert flagged_low > flagged_top
    for face in low.analyze(images[0]):
        assert (face.label != "mask") == (1 - face.probs[low.classes.index("mask")] >= 0.05)

    def video_labels(analyzer):
        events_path = str(tmp_path / ("events_%s.jsonl" % analyzer.non_compliant_threshold))
        pipeline = build_pipeline(cfg.load(), analyzer, events=EventWriter(events_path))
        pl.run(pipeline, ListSource(frames))
        pipeline.close()
        return [f["compliant"] for line in open(events_path) for f in json.loads(line)["faces"]]

    at_top, at_low = video_labels(top), video_labels(low)
    assert len(at_top) == len(at_low) and at_low.count(False) > at_top.count(False)


def test_scene_cut_detects_at_once_with_new_tracks(analyzer_factory, frames, tmp_path):
    # The video holds each scene for 10 frames: cuts at frames 10 and 20.
    config = cfg.load(overrides={"detector.every": 100})
    events_path = str(tmp_path / "events.jsonl")
    pipeline = build_pipeline(config, analyzer_factory(), events=EventWriter(events_path))
    result = pl.run(pipeline, ListSource(frames))
    pipeline.close()
    assert pipeline.cuts == 2 and result["stages"]["detect"]["count"] == 3
    lines = [json.loads(line) for line in open(events_path)]
    tracks = [set(f["track"] for f in line["faces"]) for line in lines]
    assert tracks[0] and tracks[10], "faces shown on the first frame of a scene"
    for start in (0, 10, 20):  # carried unchanged through the scene
        assert all(t == tracks[start] for t in tracks[start:start + 10])
    assert not tracks[0] & tracks[10] and not tracks[10] & tracks[20]


def test_one_bad_frame_does_not_stop_the_run(analyzer_factory, frames, tmp_path):
    analyzer = analyzer_factory()
    real = analyzer.detector.detect
    calls = []

    def flaky(image):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("injected detector failure")
        return real(image)
    analyzer.detector.detect = flaky
    events_path = str(tmp_path / "events.jsonl")
    config = cfg.load(overrides={"detector.every": 1})
    pipeline = build_pipeline(config, analyzer, events=EventWriter(events_path))
    result = pl.run(pipeline, ListSource(frames[:8]))
    pipeline.close()
    assert result["frames"] == 8 and result["errors"] == 1
    assert [json.loads(line)["frame"] for line in open(events_path)] == [0, 1, 3, 4, 5, 6, 7]


def test_baseline_classifies_every_face_on_every_frame_one_at_a_time(analyzer_factory, frames):
    config = cfg.load(overrides={"baseline": True})
    analyzer = analyzer_factory(baseline=True)
    pipeline = build_pipeline(config, analyzer)
    result = pl.run(pipeline, ListSource(frames[:6]))
    assert result["stages"]["detect"]["count"] == 6
    assert analyzer.classified == analyzer.predict_calls == pipeline.faces_seen > 0


def test_stage_timer_percentiles():
    timer = StageTimer(keep=100)
    for ms in range(1, 201):
        timer.add("detect", ms / 1000.0)
    summary = timer.summary()["detect"]
    assert summary["count"] == 200 and summary["mean_ms"] == pytest.approx(100.5)
    assert summary["p50_ms"] == pytest.approx(150.5)  # only the last 100 samples are kept
    assert "classify" not in timer.summary()
    timer.reset()
    assert timer.summary() == {}
