"""A GStreamer pipeline ending in an appsink, read frame by frame, with live reconnection.

No GLib main loop and no reader thread: `read` pulls from the appsink in short slices
and polls the bus in between, so a stop (EOS, an error, or no frame for `stall_timeout`)
is noticed within 0.1 s. A live source then closes its pipeline and reopens it after an
exponential back-off (each attempt and the recovery logged), `read` returning None
meanwhile; a file ends, after the frames decoded before the problem.
"""
import logging
import time

from edge.common import redact
from edge.errors import SourceError
from edge.io import gst
from edge.io.base import Frame, Source

log = logging.getLogger(__name__)


class GstSource(Source):
    """A GStreamer pipeline that ends in `appsink name=sink`, with live reconnection."""

    def __init__(self, uri, description, live, options, configure=None):
        Source.__init__(self, uri)
        self.is_live = live
        self._description = description
        self._configure = configure  # sets properties that must not go through parsing
        self._opt = options
        self._pipeline = self._appsink = self._bus = None
        self._index = 0
        self._pending = None      # a stop seen on the bus while a frame was still queued
        self.warnings = []        # GStreamer warnings (corrupt data concealed), newest last
        self._delay = options["backoff"]
        self._next_attempt = 0.0
        self._attempts = 0
        self._last_frame = time.monotonic()
        self._first = None        # the sample that proved a live source works at open
        try:
            self._start()
            if live and not options["retry_open"]:
                self._first = self._first_sample()
        except SourceError as exc:
            if not (live and options["retry_open"]):
                raise SourceError("cannot open {}: {}".format(redact(uri), exc))
            # str(exc): a kept log record must not hold the traceback and its pipeline
            log.warning("%s is not available (%s); retrying", redact(uri), str(exc))
            self._schedule_retry()
            return
        # A live source opened with retry_open is "opening" until its first frame.
        self.state = "opening" if live and self._first is None else "streaming"

    def _first_sample(self):
        """Wait for a live source's first frame: a camera that starts but fails at once
        (no CSI sensor, a refused stream) is reported at open, not on the first read."""
        deadline = time.monotonic() + self._opt["open_timeout"]
        while time.monotonic() < deadline:
            sample = self._appsink.try_pull_sample(int(0.1 * gst.init().SECOND))
            if sample is not None:
                return sample
            found = self._pending or gst.poll(self._bus)
            if found is not None:
                self._stop_pipeline()
                raise SourceError(found[1] if found[0] == "error" else
                                  "the stream ended before its first frame")
        self._stop_pipeline()
        raise SourceError("no frame within {:g} s".format(self._opt["open_timeout"]))

    def _start(self):
        pipeline = gst.launch(self._description, SourceError)
        if self._configure:
            self._configure(pipeline)
        self._pipeline = pipeline
        self._appsink = pipeline.get_by_name("sink")
        self._bus = pipeline.get_bus()
        self._last_frame = time.monotonic()
        try:
            self._pending = gst.play(pipeline, SourceError, self._opt["open_timeout"])
        except SourceError:
            self._pipeline = self._appsink = self._bus = None
            raise

    def _stop_pipeline(self):
        gst.stop(self._pipeline)
        self._pipeline = self._appsink = self._bus = None

    def _schedule_retry(self):
        self._stop_pipeline()
        self.state = "reconnecting"
        self._next_attempt = time.monotonic() + self._delay

    def _attempt(self):
        self._attempts += 1
        log.info("reconnecting to %s (attempt %d)", redact(self.uri), self._attempts)
        self._delay = min(self._delay * 2, self._opt["backoff_max"])
        try:
            self._start()
        except SourceError as exc:
            log.warning("reconnect to %s failed: %s; next attempt in %.2f s",
                        redact(self.uri), str(exc), self._delay)
            self._schedule_retry()

    def _stopped(self, kind, text):
        """React to EOS or an error: reconnect (live), restart (loop) or end."""
        self._pending = None
        what = "end of stream" if kind == "eos" else "error: {}".format(text)
        if self.is_live and self._opt["reconnect"]:
            log.warning("%s stopped (%s); reconnecting in %.2f s", redact(self.uri), what,
                        self._delay)
            self._schedule_retry()
        elif self._opt["loop"] and kind == "eos" and self._index > 0 and self._restart():
            pass
        else:
            if self.warnings:
                log.warning("%s: %d decoding warning(s) (corrupt data?), the first: %s",
                            redact(self.uri), len(self.warnings), self.warnings[0])
            if kind == "error":
                log.error("%s: decoding stopped after %d frames (%s); ending the stream",
                          redact(self.uri), self._index, text)
            else:
                log.info("%s: end of stream after %d frames", redact(self.uri), self._index)
            self._stop_pipeline()
            self.state = "eos"

    def _restart(self):
        """Open a file again at its end (loop=True); False when it cannot be."""
        self._stop_pipeline()
        try:
            self._start()
        except SourceError as exc:
            log.error("%s cannot be replayed: %s", redact(self.uri), str(exc))
            return False
        return True

    def read(self, timeout=1.0):
        """The next Frame, or None after `timeout` seconds (also while reconnecting)."""
        deadline = time.monotonic() + timeout
        if self._first is not None:
            sample, self._first = self._first, None
            return self._frame(sample)
        while self.is_streaming:
            now = time.monotonic()
            appsink, bus = self._appsink, self._bus  # close() may run in a signal handler
            if appsink is None:  # waiting for the next reconnection attempt
                if self.state != "reconnecting":
                    return None  # closed meanwhile
                if now >= self._next_attempt:
                    self._attempt()
                    continue
                if now >= deadline:
                    return None
                time.sleep(min(deadline, self._next_attempt) - now)
                continue
            # Short pulls so that a stop on the bus is noticed within 0.1 s.
            wait = max(0.0, min(0.1, deadline - now))
            sample = appsink.try_pull_sample(int(wait * gst.init().SECOND))
            if sample is not None:
                return self._frame(sample)
            found = self._pending or gst.poll(bus, self.warnings)
            # A live source that went silent has dropped; a file that went silent is
            # stuck on bad data: either way no frame for stall_timeout is a stop, not a hang.
            if found is None and \
                    time.monotonic() - self._last_frame > self._opt["stall_timeout"]:
                found = ("error", "no frame for {:g} s".format(self._opt["stall_timeout"]))
            if found is not None:
                sample = appsink.try_pull_sample(0)  # one may have raced the message
                if sample is not None:
                    self._pending = found
                    return self._frame(sample)
                self._stopped(*found)
                continue
            if time.monotonic() >= deadline:
                return None
        return None

    def _frame(self, sample):
        self._last_frame = time.monotonic()
        if self.state == "reconnecting":
            log.info("%s recovered after %d attempt(s)", redact(self.uri), self._attempts)
        if self.state != "streaming":
            self.state = "streaming"
        self._attempts = 0
        self._delay = self._opt["backoff"]
        frame = Frame(gst.sample_to_bgr(sample), self._index, gst.buffer_pts(sample))
        self._index += 1
        return frame

    def close(self):
        """Stop the pipeline and release its device, file or connection."""
        self._stop_pipeline()
        self.state = "closed"

    def __del__(self):
        # A source dropped without close() must still release its pipeline (and camera).
        try:
            self._stop_pipeline()
        except Exception:
            pass
