"""Video outputs from one URI: display, H.264 file, RTSP server, MJPEG over HTTP, none.

`open_sink(uri, fps=None, **options)` returns a Sink. `write(image_bgr)` opens the
pipeline lazily on the first frame (its size sets the stream's) and never raises into the
caller's loop: a sink whose output fails (a full disk, a vanished display) logs once, sets
`.failed` to the reason and ignores later frames. `close()` flushes: a video file gets its
end of stream and plays to its last frame.

Network outputs (edge.io.netsinks) bind 127.0.0.1 unless the URI names a host; exposed
beyond localhost they require a login: `http://0.0.0.0:8090/?token=SECRET` (or the
`token` option), `rtsp://USER:PASSWORD@0.0.0.0:8554/out` (or `token`, user "viewer").
"""
import logging
import os
import time
from urllib.parse import parse_qs, urlsplit

from edge.common import merge_options
from edge.errors import SinkError
from edge.io import gst
from edge.io.base import Sink

log = logging.getLogger(__name__)

MUXERS = {".mp4": "mp4mux", ".mov": "mp4mux", ".mkv": "matroskamux", ".avi": "avimux"}
# Fragmented MP4 (a fragment a second): a recording cut by a power loss or SIGKILL still
# plays up to its last fragment instead of having no index at all.
MUXER_PROPS = {"mp4mux": "fragment-duration=1000"}
DEFAULTS = {"bitrate": 4000, "quality": 80, "token": None}  # kbit/s, JPEG quality


class NullSink(Sink):
    """`none`: frames go nowhere (headless, events only)."""


class AppSrcSink(Sink):
    """appsrc -> `tail` pipeline for the display and video files, built on the first frame."""

    def __init__(self, uri, tail, fps, live, location=None):
        Sink.__init__(self, uri)
        self._tail = tail
        self._location = location  # of `filesink name=out`: set directly, never parsed
        self._fps = float(fps or 30)
        self._live = live
        self._pipeline = self._appsrc = self._bus = None
        self._size = None

    def _open(self, height, width):
        # Four frames of queue: enough to smooth the encoder, small enough to backpressure.
        self._max_bytes = 4 * width * height * 3
        desc = "appsrc name=src format=time is-live={} do-timestamp={} caps={} ! {}".format(
            "true" if self._live else "false", "true" if self._live else "false",
            gst.bgr_caps(width, height, self._fps), self._tail)
        self._pipeline = gst.launch(desc, SinkError)
        if self._location:
            self._pipeline.get_by_name("out").set_property("location", self._location)
        self._appsrc = self._pipeline.get_by_name("src")
        self._appsrc.set_property("max-bytes", self._max_bytes)
        self._bus = self._pipeline.get_bus()
        self._size = (height, width)
        gst.play(self._pipeline, SinkError, wait=False)

    def _write(self, image):
        import cv2
        if self._pipeline is None:
            if self._size is not None:
                return  # already shut down
            self._open(image.shape[0], image.shape[1])
        if image.shape[:2] != self._size:  # the stream's size is fixed by its first frame
            image = cv2.resize(image, (self._size[1], self._size[0]))
        found = gst.poll(self._bus)
        deadline = time.monotonic() + 10.0
        while found is None and self._appsrc.get_property("current-level-bytes") \
                >= self._max_bytes:
            if self._live or time.monotonic() > deadline:
                return  # live: drop the frame rather than lag; file: encoder stuck
            time.sleep(0.002)
            found = gst.poll(self._bus)
        if found is not None:
            raise SinkError(found[1] if found[0] == "error" else "unexpected end of stream")
        pts = None if self._live else self.frames / self._fps
        self._appsrc.emit("push-buffer", gst.bgr_to_buffer(image, pts, 1.0 / self._fps))

    def close(self):
        """Send end of stream and wait for it, so the file is complete, then stop."""
        if self._pipeline is not None and self.failed is None:
            self._appsrc.emit("end-of-stream")
            found = gst.wait_bus(self._bus, 30.0)
            if found is None or found[0] == "error":
                self._fail(found[1] if found else "no end of stream within 30 s")
        self._shutdown()

    def _shutdown(self):
        gst.stop(self._pipeline)
        self._pipeline = self._appsrc = self._bus = None


def file_sink(uri, path, fps, opt):
    """A video file: H.264 in mp4/mkv/avi by extension; close() makes it playable."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in MUXERS:
        raise SinkError("unknown video file type '{}' for output {}: use {}".format(
            ext, path, ", ".join(sorted(MUXERS))))
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise SinkError("output folder {} does not exist".format(folder))
    gst.require(["appsrc", "videoconvert", "h264parse", MUXERS[ext], "filesink"], SinkError)
    muxer = MUXERS[ext]
    # Unbuffered: what the muxer gives is on disk, not in a stdio buffer lost in a crash.
    tail = "{} ! h264parse ! {} {} ! filesink name=out buffer-mode=unbuffered".format(
        gst.h264_encoder(opt["bitrate"]), muxer, MUXER_PROPS.get(muxer, ""))
    return AppSrcSink(uri, tail, fps, live=False, location=path)


def display_sink(uri, fps):
    """On-screen window: nv3dsink on the Jetson, an X11 (or Wayland) sink elsewhere.

    The sink is named, not autovideosink's pick: without an X sink installed that can
    choose kmssink, which fights the desktop for the screen. Closing the window disables
    this output only.
    """
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        raise SinkError("output {} needs a screen but $DISPLAY is not set: run on the "
                        "desktop, or use a file, rtsp://@:8554/out or http://@:8090/ "
                        "output".format(uri))
    if gst.has_element("nv3dsink"):
        tail = ("videoconvert ! video/x-raw,format=BGRx ! nvvidconv ! "
                "video/x-raw(memory:NVMM) ! nv3dsink sync=false")
        return AppSrcSink(uri, tail, fps, live=True)
    names = ["ximagesink", "glimagesink"] if os.environ.get("DISPLAY") else \
        ["waylandsink", "glimagesink"]
    for name in names:
        if gst.has_element(name):
            return AppSrcSink(uri, "videoconvert ! {} sync=false".format(name), fps, live=True)
    raise SinkError(gst.missing_message(names[0]))


def _options(options):
    return merge_options(options, DEFAULTS, "output")


def _host_port(uri, default_port):
    """Bind address of rtsp://@:PORT/PATH or http://HOST:PORT/: '@' or none = 127.0.0.1."""
    parts = urlsplit(uri)
    host = parts.netloc.rsplit("@", 1)[-1].rsplit(":", 1)[0] if parts.netloc else ""
    try:
        port = parts.port
    except ValueError:
        raise SinkError("bad port in output {}".format(uri))
    return host or "127.0.0.1", default_port if port is None else port, parts


def open_sink(uri, fps=None, **options):
    """Open an output by URI or path (see the module docstring); raises SinkError when it
    cannot (unknown scheme or file type, no $DISPLAY, port in use, element missing)."""
    opt = _options(options)
    uri = str(uri)
    if uri in ("", "none", "none://"):
        return NullSink("none")
    if uri.startswith("display://"):
        return display_sink(uri, fps)
    if uri.startswith("rtsp://"):
        from edge.io.netsinks import RtspSink
        host, port, parts = _host_port(uri, 8554)
        login = (parts.username, parts.password or "") if parts.username else None
        if opt["token"] and not login:
            login = ("viewer", opt["token"])
        return RtspSink(uri, host, port, parts.path or "/out", fps, opt["bitrate"], login)
    if uri.startswith("http://"):
        from edge.io.netsinks import MjpegSink
        host, port, parts = _host_port(uri, 8090)
        token = opt["token"] or dict(parse_qs(parts.query)).get("token", [None])[-1]
        return MjpegSink(uri.split("?")[0], host, port, token, opt["quality"])
    if "://" in uri and not uri.startswith("file://"):
        raise SinkError("unknown output scheme in '{}': use display://0, a .mp4/.mkv/.avi "
                        "path or file://, rtsp://@:8554/out, http://@:8090/ or none".format(uri))
    path = uri[len("file://"):] if uri.startswith("file://") else uri
    return file_sink(uri, path, fps, opt)


def open_sinks(uris, fps=None, **options):
    """Open several outputs; if one fails, those already open are closed and it raises."""
    sinks = []
    try:
        for uri in uris:
            sinks.append(open_sink(uri, fps, **options))
    except Exception:
        for sink in sinks:
            sink.close()
        raise
    return sinks
