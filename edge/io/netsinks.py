"""Network video outputs: an in-process RTSP server and MJPEG over HTTP (a server of its
own, or the service's one HTTP server through ``MjpegFeed``).

Both bind 127.0.0.1 unless the URI names a host (rtsp://0.0.0.0:8554/out); the HTTP
stream exposed beyond localhost requires a token, which clients give as `?token=...` or
an `Authorization: Bearer ...` header. Both run their servers in daemon threads and never
block the caller's loop: a slow client gets fewer frames, not an older picture.
"""
import http.server
import logging
import socketserver
import threading
import time
from urllib.parse import parse_qs, urlsplit

from edge.common import is_loopback, redact, token_ok
from edge.errors import SinkError
from edge.io import gst
from edge.io.base import Sink

log = logging.getLogger(__name__)


class RtspSink(Sink):
    """An in-process RTSP server (gst-rtsp-server) fed by appsrc: rtsp://HOST:PORT/PATH.

    The port is bound when the sink opens (so a port in use fails at start); the stream
    is mounted on the first frame, whose size it takes. All clients share one encoder.
    With `credentials` (user, password) clients must log in (RTSP basic authentication);
    they are required when the server listens beyond localhost.
    """

    def __init__(self, uri, host, port, path, fps, bitrate, credentials=None):
        Sink.__init__(self, redact(uri))
        if not is_loopback(host) and not credentials:
            raise SinkError("output {} exposes the video beyond localhost: give it a login "
                            "(rtsp://USER:PASSWORD@{}:{}{}, or set output.rtsp_password)".format(
                                redact(uri), host, port, path))
        gst.init(SinkError)
        try:
            import gi
            gi.require_version("GstRtspServer", "1.0")
            from gi.repository import GLib, GstRtspServer
        except (ImportError, ValueError):
            raise SinkError("RTSP output needs gst-rtsp-server for Python: install "
                            "gir1.2-gst-rtsp-server-1.0 (Debian/JetPack)")
        gst.require(["appsrc", "videoconvert", "rtph264pay"], SinkError)
        self._fps = float(fps or 30)
        # A keyframe a second: a viewer joining the shared stream waits at most that long.
        self._encoder = gst.h264_encoder(bitrate, SinkError, keyframe_interval=round(self._fps))
        self._path = path
        self._lock = threading.Lock()
        self._appsrc = None
        self._level_max = 0
        self._server = GstRtspServer.RTSPServer()
        self._server.set_address(host)
        self._server.set_service(str(port))
        self._credentials = credentials
        if credentials:
            self._server.set_auth(_basic_auth(*credentials))
        self._context = GLib.MainContext.new()
        try:
            self._source_id = self._server.attach(self._context)
        except GLib.Error as exc:
            raise SinkError("cannot serve RTSP on {}:{} ({})".format(host, port, exc))
        if not self._source_id:
            raise SinkError("cannot serve RTSP on {}:{} (port in use?)".format(host, port))
        self.port = self._server.get_bound_port()
        self._loop = GLib.MainLoop.new(self._context, False)
        self._thread = threading.Thread(target=self._loop.run, name="rtsp-server")
        self._thread.daemon = True
        self._thread.start()
        self.url = "rtsp://{}:{}{}".format(host, self.port, path)
        log.info("RTSP output at %s (mounted on the first frame)", self.url)

    def _write(self, image):
        if self._loop is None:
            return  # closed
        if self._level_max == 0:
            self._mount(image.shape[0], image.shape[1])
        with self._lock:
            appsrc = self._appsrc
        # No client: nothing to encode. A slow client: drop rather than queue (live).
        # Not PLAYING yet (the stream is being prepared for its first viewer): a frame
        # pushed into the paused live source stalled the stream for good (1 start in 20
        # on a busy machine: the viewer got no picture at all), so wait for PLAYING.
        if appsrc is None or not gst.is_playing(appsrc) or \
                appsrc.get_property("current-level-bytes") > self._level_max:
            return
        appsrc.emit("push-buffer", gst.bgr_to_buffer(image, None, 1.0 / self._fps))

    def _mount(self, height, width):
        from gi.repository import GstRtspServer
        self._level_max = 2 * width * height * 3
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(
            "( appsrc name=src is-live=true format=time do-timestamp=true caps={} ! {} ! "
            "rtph264pay name=pay0 pt=96 config-interval=1 )".format(
                gst.bgr_caps(width, height, self._fps), self._encoder))
        factory.set_shared(True)
        if self._credentials:
            from gi.repository import Gst
            factory.add_role_from_structure(Gst.Structure.new_from_string(
                "viewer, media.factory.access=(boolean)true, "
                "media.factory.construct=(boolean)true"))
        factory.connect("media-configure", self._on_media)
        self._server.get_mount_points().add_factory(self._path, factory)

    def _on_media(self, factory, media):
        appsrc = media.get_element().get_by_name("src")
        with self._lock:
            self._appsrc = appsrc
        media.connect("unprepared", self._on_unprepared)

    def _on_unprepared(self, media):
        with self._lock:
            self._appsrc = None

    def _shutdown(self):
        if getattr(self, "_loop", None) is None:
            return
        from gi.repository import GstRtspServer
        with self._lock:
            self._appsrc = None
        # Drop the clients (they see the stream end), the mount and the listening socket.
        self._server.client_filter(lambda server, client: GstRtspServer.RTSPFilterResult.REMOVE)
        self._server.get_mount_points().remove_factory(self._path)
        source = self._context.find_source_by_id(self._source_id)
        if source is not None:
            source.destroy()
        # Quit from inside the loop: a quit() that came before run() started would be lost.
        from gi.repository import GLib
        loop, idle = self._loop, GLib.Idle()
        idle.set_callback(lambda *args: loop.quit() or False)
        idle.attach(self._context)
        self._thread.join(5.0)
        self._loop = None


def _basic_auth(user, password):
    """An RTSPAuth that lets `user`/`password` in with the role 'viewer'."""
    from gi.repository import GstRtspServer
    token = GstRtspServer.RTSPToken()
    token.set_string("media.factory.role", "viewer")
    auth = GstRtspServer.RTSPAuth()
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
    return auth


class MjpegFeed(Sink):
    """The newest frame for MJPEG viewers (multipart/x-mixed-replace), served by ``serve``.

    ``write`` only keeps a reference to the frame (the loop draws each frame on a new
    array); the first viewer thread that wants it encodes it to JPEG, once for all
    viewers, so the encoding happens off the camera loop. ``active`` is False while nobody
    watches or, with ``max_fps``, until the next frame is due: the loop then skips drawing
    for this output. The service's page serves one of these at /stream.mjpg.
    """

    def __init__(self, uri, quality, max_fps=None):
        Sink.__init__(self, uri)
        self._quality = int(quality)
        self._interval = 1.0 / max_fps if max_fps else 0.0
        self._cond = threading.Condition()
        self._encode_lock = threading.Lock()
        self._image, self._seq, self.clients, self._closed = None, 0, 0, False
        self._jpeg, self._jpeg_seq = None, 0
        self._last = None
        self.encoded = 0  # JPEG frames encoded (for the bench and the tests)

    @property
    def active(self):
        """Whether the loop should draw and write the next frame here."""
        if not self.clients or self._closed:
            return False
        return self._last is None or time.monotonic() - self._last >= 0.95 * self._interval

    def _write(self, image):
        if not self.clients:
            return
        with self._cond:
            self._last = time.monotonic()
            self._image, self._seq = image, self._seq + 1
            self._cond.notify_all()

    def next_jpeg(self, seq, timeout=1.0):
        """(jpeg bytes, seq) newer than `seq`, waiting up to `timeout`; (None, seq) if none."""
        import cv2
        with self._cond:
            if self._seq == seq and not self._closed:
                self._cond.wait(timeout)
            if self._closed or self._seq == seq:
                return None, seq
            image, current = self._image, self._seq
        with self._encode_lock:
            if self._jpeg_seq != current:
                ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self._quality])
                if not ok:
                    raise SinkError("JPEG encoding failed")
                self._jpeg, self._jpeg_seq = jpeg.tobytes(), current
                self.encoded += 1
            return self._jpeg, self._jpeg_seq

    def serve(self, handler):
        """Stream to one HTTP client (``handler``, a BaseHTTPRequestHandler) until it leaves."""
        handler.send_response(200)
        handler.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        handler.send_header("Cache-Control", "no-cache, private")
        handler.end_headers()
        with self._cond:
            self.clients += 1
        seq = 0
        try:
            while not self._closed:
                jpeg, seq = self.next_jpeg(seq)
                if jpeg is None:
                    continue
                handler.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                    + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the viewer went away
        finally:
            with self._cond:
                self.clients -= 1

    def _shutdown(self):
        cond = getattr(self, "_cond", None)
        if cond is None:
            return
        with cond:
            self._closed = True
            cond.notify_all()


class MjpegSink(MjpegFeed):
    """MJPEG over HTTP from a server of its own: http://HOST:PORT/.

    Frames are JPEG-encoded only while a client watches. Beyond localhost a token is
    required, given by clients as ?token=... or `Authorization: Bearer ...`.
    """

    def __init__(self, uri, host, port, token, quality):
        MjpegFeed.__init__(self, uri, quality)
        if not is_loopback(host) and not token:
            raise SinkError("output {} exposes the video beyond localhost: give it a token "
                            "(http://{}:{}/?token=SECRET, or set output.http_token)".format(
                                uri, host, port))
        self._token = token
        try:
            self._server = _HttpServer((host, port), _MjpegHandler)
        except OSError as exc:
            raise SinkError("cannot serve HTTP on {}:{} ({})".format(host, port, exc))
        self._server.sink = self
        self.port = self._server.server_address[1]
        # A short poll interval: close() waits one interval for the server to stop.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,),
                                        name="mjpeg-http")
        self._thread.daemon = True
        self._thread.start()
        log.info("MJPEG output at http://%s:%d/%s", host, self.port,
                 " (token required)" if token else "")

    def authorized(self, path, headers):
        """True when no token is set, or the request carries it."""
        return token_ok(self._token, headers, parse_qs(urlsplit(path).query))

    def _shutdown(self):
        MjpegFeed._shutdown(self)
        if getattr(self, "_server", None) is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None


class _HttpServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True  # a watching client never blocks shutdown


class _MjpegHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        sink = self.server.sink
        if urlsplit(self.path).path not in ("/", "/stream.mjpg"):
            self.send_error(404)
            return
        if not sink.authorized(self.path, self.headers):
            self.send_error(401, "token required")
            return
        sink.serve(self)

    def log_message(self, fmt, *args):
        log.debug("http %s: " + fmt, self.client_address[0], *args)
