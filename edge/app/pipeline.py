"""The video loop: detect -> crop -> classify -> track/vote -> overlay -> sinks + events.

``Pipeline`` is the service's per-frame logic on top of ``edge.infer.analyzer.FaceAnalyzer``
(one frame in, faces out): the tracker (detection every ``detect_every`` frames and at
scene cuts, classification of a face when it appears and then every ``classify_every``
frames, all due faces of a frame in one batch), overlay, sinks, events, health and the
operator's hub (people, alerts, MQTT, the page: ``edge.ops``). A frame that raises is
logged (rate-limited), counted and skipped. ``run`` reads a source
through it; ``edge.app.assemble`` builds both from the configuration.
"""
import logging
import os
import time

import numpy as np

from edge.app import overlay
from edge.infer.faces import Face, count_labels
from edge.infer.track import Tracker

log = logging.getLogger(__name__)


class Pipeline(object):
    """The video loop's per-frame logic and its outputs (see the module docstring).

    baseline: classify every face on every frame one at a time, no interval, no voting
    (the speed reference); sinks: objects with ``write(image)``; events: an
    ``EventWriter`` or None; health: an object with ``update(**fields)`` or None;
    saver: a ``FaceSaver`` (save_faces) or None; scene_cut: mean grey-level change of a
    thumbnail (0..255) that counts as a new scene: detect at once and forget the tracks
    (0: off); ops: an ``edge.ops.hub.OpsHub`` or None. A sink with an ``active``
    attribute that is False (nobody watching) is skipped, and the frame is drawn only
    when some sink takes it.
    """

    def __init__(self, analyzer, tracker=None, detect_every=1, classify_every=1, baseline=False,
                 draw=True, blur=False, sinks=(), events=None, health=None, saver=None,
                 scene_cut=0.0, ops=None):
        self.analyzer, self.baseline = analyzer, baseline
        self.timer = analyzer.timer
        if baseline:
            detect_every, classify_every = 1, 1
            tracker = Tracker(vote=1, next_id=tracker.next_id if tracker is not None else None)
        self.tracker = tracker if tracker is not None else Tracker()
        self.detect_every, self.classify_every = int(detect_every), int(classify_every)
        self.draw, self.blur, self.scene_cut = draw, blur, float(scene_cut)
        self.cuts = 0             # scene cuts seen
        self._thumb = None
        self._since_detect = None  # frames since the detector last ran (None: never)
        self.sinks, self.events, self.health, self.saver = list(sinks), events, health, saver
        self.ops = ops
        self.frames = 0           # frames processed (bad ones included)
        self.frame_size = None    # (width, height) of the last frame
        self.errors = 0           # frames that raised
        self.faces_seen = 0       # sum over frames of faces reported
        self.fps = 0.0            # smoothed, for the HUD and health
        self._last_time = self._frame_time = None
        self._last_error_log = None
        self._errors_unlogged = 0

    def adopt(self, previous, same_scene=True):
        """Carry on from ``previous`` (the pipeline this one replaces on a reload): its
        counters and frame rate, and with ``same_scene`` (same input) its detector timing."""
        for name in ("frames", "errors", "faces_seen", "cuts", "fps", "frame_size", "_last_time",
                     "_frame_time"):
            setattr(self, name, getattr(previous, name))
        if same_scene:
            self._since_detect, self._thumb = previous._since_detect, previous._thumb

    def process(self, image, index=None, pts=None):
        """Analyze one BGR frame, update tracks, draw and write it; returns its faces."""
        n = self.frames
        self.frames += 1
        self.frame_size = (int(image.shape[1]), int(image.shape[0]))
        self._tick()
        if self._detect_now(image):
            self._since_detect = 0
            boxes, scores = self.analyzer.detect(image)
            with self.timer.stage("track"):
                tracks = self.tracker.update(boxes, scores)
                due = [t for t in tracks if t.needs_classification(n, self.classify_every)]
            if due:
                batch = 1 if self.baseline else None
                probs = self.analyzer.classify(image, [t.box for t in due], batch)
                for track, p in zip(due, probs):
                    if p is not None:
                        track.add_probs(p, self.analyzer.classes, n, self.analyzer.non_compliant_threshold)
                        if self.saver is not None:
                            self.saver.save(image, self._face(track), n if index is None else index)
        else:
            self._since_detect += 1
            with self.timer.stage("track"):
                tracks = self.tracker.visible()
        faces = [self._face(t) for t in tracks]
        self.faces_seen += len(faces)
        counts = count_labels(faces)
        taking = [s for s in self.sinks if getattr(s, "active", True)]
        if taking:
            with self.timer.stage("draw"):
                shown = overlay.draw(image, faces, self.fps, counts, blur=self.blur, boxes=self.draw)
            with self.timer.stage("write"):
                for sink in taking:
                    sink.write(shown)
        if self.events is not None:
            self.events.write(n if index is None else index, faces,
                              {"pts": round(pts, 3)} if pts is not None else None)
        if self.ops is not None:
            with self.timer.stage("ops"):
                self.ops.on_frame(faces, self.tracker.all, n if index is None else index)
        return faces

    def step(self, image, index=None, pts=None):
        """``process`` that never raises: a bad frame is logged (rate-limited) and counted."""
        try:
            return self.process(image, index, pts)
        except Exception:  # noqa: one bad frame must not stop a camera that runs for months
            self.errors += 1
            self._log_error()
            return None

    def _detect_now(self, image):
        """Detector due (every ``detect_every`` frames), or the scene changed under the tracks."""
        due = self._since_detect is None or self._since_detect + 1 >= self.detect_every
        if self.scene_cut <= 0 or self.detect_every == 1:
            return due
        with self.timer.stage("track"):
            # About 64 x 36 sampled pixels: microseconds, and their mean change ignores
            # sensor noise and people walking, but not a new picture.
            h, w = image.shape[:2]
            thumb = image[::max(1, h // 36), ::max(1, w // 64)].astype(np.int16)
            cut = self._thumb is not None and self._thumb.shape == thumb.shape and \
                float(np.abs(thumb - self._thumb).mean()) > self.scene_cut
            self._thumb = thumb
        if cut:
            # Faces after a cut are other people: no carried boxes, no inherited votes.
            self.cuts += 1
            self.tracker.reset()
        return due or cut

    def _face(self, track):
        return Face(track.box, track.det_score, track.probs, track.label, track.score, track.id)

    def _tick(self):
        now = time.perf_counter()
        if self._last_time is not None:
            dt = max(now - self._last_time, 1e-6)
            # An exponential average of frame times (not of rates, which the fast frames
            # between detections would inflate): steady on screen, follows a change.
            self._frame_time = dt if self._frame_time is None else 0.95 * self._frame_time + 0.05 * dt
            self.fps = 1.0 / self._frame_time
        self._last_time = now

    def _log_error(self):
        now = time.monotonic()
        if self._last_error_log is not None and now - self._last_error_log < 10.0:
            self._errors_unlogged += 1
            return
        more = " (%d more since the last report)" % self._errors_unlogged if self._errors_unlogged else ""
        log.exception("frame %d skipped after an error%s", self.frames - 1, more)
        self._last_error_log, self._errors_unlogged = now, 0

    def close(self):
        """Flush and close the events and every sink (the video plays to its last frame)."""
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:  # noqa: close the others whatever one of them does
                log.exception("closing output %r failed", sink)
        if self.events is not None:
            self.events.close()


def run(pipeline, source, should_stop=None, max_frames=0, heartbeat=None, read_timeout=0.5,
        pending=(), progress=None):
    """Read ``source`` through ``pipeline`` until it ends, ``should_stop()`` or ``max_frames``.

    ``pending``: frames already read (to measure the input's rate) that go through first;
    ``progress(frames, seconds)``: called after every frame of this run (a bench's report).
    Returns a summary dict (frames, errors, seconds, fps, faces_per_frame, stages). The
    caller closes the source and the pipeline. ``heartbeat.beat()`` (systemd watchdog)
    runs on every iteration, frame or not, so a stalled camera is not a hung service.
    """
    should_stop = should_stop or (lambda: False)
    timer, health, ops = pipeline.timer, pipeline.health, getattr(pipeline, "ops", None)
    start, cpu = time.perf_counter(), _cpu_seconds()
    state = None
    pending = list(pending)
    first_frame = pipeline.frames
    while not should_stop():
        t0 = time.perf_counter()
        frame = pending.pop(0) if pending else source.read(timeout=read_timeout)
        if heartbeat is not None:
            heartbeat.beat()
        if frame is None:
            if not source.is_streaming:
                break
            if health is not None:
                # Every idle turn, not only on a change: the health file's "updated" time
                # then shows a live loop during a camera outage (Health rate-limits writes).
                state = source.state
                health.update(source_state=state)
            if ops is not None:
                ops.tick(source.state)
            continue
        timer.add("capture", time.perf_counter() - t0)
        faces = pipeline.step(frame.image, frame.index, frame.pts)
        if health is not None:
            state = source.state
            health.update(last_frame_time=time.time(), fps=round(pipeline.fps, 2),
                          source_state=state, faces=len(faces or ()),
                          frames=pipeline.frames, errors=pipeline.errors)
        if ops is not None:
            ops.tick(source.state, pipeline.fps, pipeline.frames, pipeline.errors)
        if progress is not None:
            progress(pipeline.frames - first_frame, time.perf_counter() - start)
        if max_frames and pipeline.frames >= max_frames:
            break
    return summary(pipeline, time.perf_counter() - start, _cpu_seconds() - cpu)


def _cpu_seconds():
    """User + system CPU time of this process, all threads (GStreamer's included)."""
    times = os.times()
    return times[0] + times[1]


def summary(pipeline, seconds, cpu_seconds=None):
    """What a run did, for the log, the bench and the tests.

    ``cpu_seconds``: the process's CPU time over the run; on a shared machine it says
    what the work cost when the wall clock (``fps``) mostly says how busy the others were.
    """
    frames = pipeline.frames
    return {
        "frames": frames,
        "errors": pipeline.errors,
        "seconds": round(seconds, 3),
        "cpu_seconds": None if cpu_seconds is None else round(cpu_seconds, 3),
        "cpu_ms_per_frame": round(1000.0 * cpu_seconds / frames, 2) if cpu_seconds and frames else None,
        "fps": round(frames / seconds, 2) if seconds > 0 else 0.0,
        "faces_per_frame": round(pipeline.faces_seen / float(frames), 2) if frames else 0.0,
        "classified": pipeline.analyzer.classified,
        "predict_calls": pipeline.analyzer.predict_calls,
        "stages": pipeline.timer.summary(),
    }
