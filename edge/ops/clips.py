"""Short clips around each non-compliant person (off by default: ``clips.dir``).

``ClipRecorder`` is one of the loop's outputs: it receives the frames as shown (overlay
drawn, faces pixelated when ``overlay.blur_faces`` is on, like every other output), keeps
the last ``before`` seconds at ``fps`` frames a second, scaled to ``width`` pixels, and,
when the hub reports a non-compliant person, writes those and the next ``after`` seconds
to ``clip_<UTC time>_track<N>_<label>.mp4`` in the folder. A person settling while a clip
records extends it (up to ``max_seconds``). A thread of this module encodes (the
project's H.264 file output), so the loop only scales and queues frames. After each clip
the oldest clips are deleted until at most ``max_count`` files and ``max_mb`` MiB remain.
"""
import logging
import os
import queue
import re
import threading
import time

import cv2

from edge.io.base import Sink
from edge.io.sinks import open_sink
from edge.ops.people import iso_time

log = logging.getLogger(__name__)

NAME = re.compile(r"^clip_\d{8}T\d{6}Z_track\d+_[a-z_]+\.mp4$")


class ClipRecorder(Sink):
    """See the module docstring."""

    def __init__(self, folder, before=3.0, after=3.0, fps=10.0, width=640, max_count=50,
                 max_mb=500.0, max_seconds=30.0, clock=time.monotonic):
        Sink.__init__(self, "clips:" + folder)
        self.folder = folder
        if not os.path.isdir(folder):
            os.makedirs(folder)
        self.before, self.after, self.fps = float(before), float(after), float(fps)
        self.width, self.max_count, self.max_mb = int(width), int(max_count), float(max_mb)
        self.max_seconds = float(max_seconds)
        self.clock = clock
        self.recorded = self.deleted = self.skipped = 0
        self._ring = []            # (monotonic time, frame) of the last `before` seconds
        self._last = None
        self._clip = None          # the clip being recorded: dict(path, until, end, queue)
        self._writers = []
        self._lock = threading.Lock()

    @property
    def active(self):
        """The loop draws and writes a frame here only when one is due (``fps``)."""
        # 5 % early is on time: frames that arrive at exactly the rate are not skipped.
        return self._last is None or self.clock() - self._last >= 0.95 / self.fps

    def _write(self, image):
        now = self.clock()
        if not self.active:
            return
        self._last = now
        h, w = image.shape[:2]
        if w > self.width:
            small = cv2.resize(image, (self.width, int(round(h * self.width / float(w)))),
                               interpolation=cv2.INTER_AREA)
        else:
            small = image.copy()
        with self._lock:
            self._ring.append((now, small))
            while self._ring and self._ring[0][0] < now - self.before:
                self._ring.pop(0)
            clip = self._clip
            if clip is not None:
                self._put(clip, small)
                if now >= clip["until"]:
                    self._finish()

    def trigger(self, person, now=None):
        """A non-compliant person was counted: start a clip, or extend the one recording."""
        mono = self.clock()
        with self._lock:
            if self._clip is not None:
                self._clip["until"] = min(mono + self.after, self._clip["end"])
                return
            stamp = iso_time(now if now is not None else time.time())
            name = "clip_%s_track%d_%s.mp4" % (re.sub(r"[-:]|\.\d+", "", stamp), int(person.track),
                                               re.sub(r"[^a-z_]", "", str(person.label)))
            clip = {"path": os.path.join(self.folder, name), "until": mono + self.after,
                    "end": mono + self.max_seconds,
                    "queue": queue.Queue(maxsize=int(self.fps * (self.max_seconds + self.before)) + 2)}
            for _, frame in self._ring:
                self._put(clip, frame)
            writer = threading.Thread(target=self._encode, args=(clip,), name="clip-writer")
            writer.daemon = True
            writer.start()
            self._writers = [t for t in self._writers if t.is_alive()] + [writer]
            self._clip = clip

    def _put(self, clip, frame):
        try:
            clip["queue"].put_nowait(frame)
        except queue.Full:
            self.skipped += 1

    def _finish(self):
        self._clip["queue"].put(None)
        self._clip = None

    def _encode(self, clip):
        """The writer thread: frames from the queue to the file, then the folder's limits."""
        sink = None
        try:
            while True:
                frame = clip["queue"].get()
                if frame is None:
                    break
                if sink is None:
                    sink = open_sink(clip["path"], self.fps)
                sink.write(frame)
        except Exception:  # noqa: a clip that fails must not stop the next one
            log.exception("clip %s failed", clip["path"])
        finally:
            if sink is not None:
                sink.close()
                if sink.failed is None:
                    with self._lock:
                        self.recorded += 1
                    log.info("clip %s (%d frames)", clip["path"], sink.frames)
        self._enforce_limits(keep=clip["path"])

    def _enforce_limits(self, keep=None):
        """Delete the oldest clips beyond ``max_count`` files or ``max_mb`` MiB."""
        try:
            names = [n for n in os.listdir(self.folder) if NAME.match(n)]
            files = sorted((os.path.join(self.folder, n) for n in names), key=os.path.getmtime)
            sizes = dict((f, os.path.getsize(f)) for f in files)
        except OSError as exc:
            log.warning("clips folder %s: %s", self.folder, exc)
            return
        total = sum(sizes.values())
        older = [f for f in files if f != keep]  # the clip just written stays
        while older and (len(older) + (keep in sizes) > self.max_count
                         or total > self.max_mb * 1024 * 1024):
            oldest = older.pop(0)
            try:
                os.remove(oldest)
                self.deleted += 1
            except OSError as exc:
                log.warning("cannot delete old clip %s: %s", oldest, exc)
            total -= sizes[oldest]

    def stats(self):
        """Counters for the page and metrics."""
        return {"recorded": self.recorded, "deleted": self.deleted, "skipped": self.skipped,
                "recording": self._clip is not None, "folder": self.folder}

    def _shutdown(self):
        lock = getattr(self, "_lock", None)
        if lock is None:
            return
        with lock:
            if self._clip is not None:
                self._finish()
        for writer in getattr(self, "_writers", []):
            writer.join(30.0)
