"""Video and image inputs from one URI: cameras, files, RTSP, stills, folders, test patterns.

`open_source(uri, **options)` returns a Source whose `read(timeout)` gives a Frame (BGR
image, index, pts, name) or None when no frame came within the timeout. Video goes through
GStreamer and an appsink (edge.io.gstsource; pip's OpenCV has no GStreamer), stills
through OpenCV.

Live sources (csi://, v4l2, rtsp://, test:// with is-live=true) keep only the newest frame
and, when they drop (EOS, bus error, or no frame for `stall_timeout`), are reopened with
exponential back-off while `read` keeps returning None. Files deliver every frame in order
and end cleanly; a corrupt file ends after its last decodable frame with a log line.

A live source must deliver its first frame within `open_timeout`: a camera that is absent
when the service starts (/dev/video99, a CSI sensor that fails, an RTSP server that
refuses) raises SourceError, so a misconfigured device fails loudly. With retry_open=True
it is waited for instead (state "opening", then "reconnecting" while it is absent). A
camera lost later is always reconnected (unless reconnect=False).

States: "opening", "streaming", "reconnecting", "eos" (the end of a file), "closed".
"""
import logging
import os
from urllib.parse import parse_qs, unquote, urlsplit

from edge.common import IMAGE_EXTENSIONS, merge_options, redact
from edge.errors import ConfigError, SourceError
from edge.io import gst
from edge.io.base import Frame, Source
from edge.io.gstsource import GstSource

log = logging.getLogger(__name__)

SCHEMES = ("csi://", "v4l2://", "file://", "rtsp://", "rtsps://", "test://")

DEFAULTS = {
    "width": None, "height": None, "fps": None,   # camera capture mode
    "flip_method": 0,                              # csi:// (nvvidconv flip-method)
    "format": "auto",                              # v4l2: auto | raw | mjpeg
    "latency": 200, "protocols": "tcp",            # rtsp:// jitter buffer (ms), transport
    "reconnect": True,                             # live sources reopen when they drop
    "backoff": 0.5, "backoff_max": 30.0,           # seconds, doubling between attempts
    "open_timeout": 10.0,                          # seconds for a pipeline to start
    "stall_timeout": 10.0,                         # no frame this long = dropped/stuck
    "retry_open": False,                           # live: absent at start -> keep trying
    "loop": False,                                 # files: start again at the end (soak)
}


class ImageSource(Source):
    """Still images: one file, or a folder's images in sorted order (by file name)."""

    def __init__(self, uri, paths):
        Source.__init__(self, uri)
        self._paths = list(paths)
        self._index = 0
        self.skipped = 0  # undecodable files in a folder (logged, not fatal)
        self.state = "streaming" if self._paths else "eos"

    def read(self, timeout=1.0):
        """The next decodable image as a Frame named after its file; None at the end."""
        while self._paths and self.state == "streaming":
            path = self._paths.pop(0)
            image = read_image(path)
            if image is None:
                self.skipped += 1
                log.warning("skipping %s: not a decodable image", path)
                continue
            frame = Frame(image, self._index, None, os.path.basename(path))
            self._index += 1
            return frame
        if self.state == "streaming":
            if self.skipped:
                log.info("%s: %d image(s) read, %d skipped", self.uri, self._index,
                         self.skipped)
            self.state = "eos"
        return None


def read_image(path):
    """Decode an image file to BGR uint8; None when it cannot be decoded."""
    import cv2
    import numpy as np
    try:
        # imdecode of the bytes handles non-ASCII paths that imread mishandles on some builds
        data = np.fromfile(path, dtype=np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except (OSError, cv2.error):
        return None
    return image


def _options(options):
    return merge_options(options, DEFAULTS, "source")


def open_source(uri, **options):
    """Open an input by URI or path; see the module docstring for the accepted forms.

    Raises SourceError (missing file, unknown scheme, absent camera, element not
    installed) or ConfigError (an unknown option).
    """
    opt = _options(options)
    uri = str(uri)
    if uri.startswith("csi://"):
        return _csi(uri, opt)
    if uri.startswith("v4l2://") or uri.startswith("/dev/video"):
        return _v4l2(uri, opt)
    if uri.startswith("rtsp://") or uri.startswith("rtsps://"):
        return _rtsp(uri, opt)
    if uri.startswith("test://"):
        return _test(uri, opt)
    if "://" in uri and not uri.startswith("file://"):
        raise SourceError("unknown input scheme in '{}': use one of {}, a video or image "
                          "path, or a folder of images".format(redact(uri), ", ".join(SCHEMES)))
    path = uri[len("file://"):] if uri.startswith("file://") else uri
    if uri.startswith("file://") and not os.path.exists(path):
        path = unquote(path)  # file:///my%20clip.mp4, as a browser or a file manager writes it
    if os.path.isdir(path):
        paths = sorted(os.path.join(path, name) for name in os.listdir(path)
                       if name.lower().endswith(IMAGE_EXTENSIONS))
        if not paths:
            raise SourceError("folder {} holds no images ({})".format(
                path, " ".join(IMAGE_EXTENSIONS)))
        return ImageSource(uri, paths)
    if not os.path.isfile(path):
        raise SourceError("no such file: {}".format(path))
    if path.lower().endswith(IMAGE_EXTENSIONS):
        if read_image(path) is None:
            raise SourceError("cannot decode image {}".format(path))
        return ImageSource(uri, [path])
    return _file(uri, path, opt)


def _to_bgr():
    # On the Jetson decoders and the CSI camera give NVMM buffers: nvvidconv copies them to
    # system memory (as BGRx: it has no BGR), videoconvert then drops the x byte.
    if gst.on_jetson():
        return "nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR"
    return "videoconvert ! video/x-raw,format=BGR"


def _appsink(live):
    # Live: one buffer, drop the older one, so a slow loop always gets the newest frame.
    # Files: a short queue that blocks the decoder, so every frame is delivered in order.
    return "appsink name=sink emit-signals=false sync=false max-buffers={} drop={}".format(
        1 if live else 4, "true" if live else "false")


def _mode_caps(kind, opt):
    fields = [kind]
    if opt["width"] and opt["height"]:
        fields.append("width={},height={}".format(int(opt["width"]), int(opt["height"])))
    if opt["fps"]:
        fields.append("framerate={}/{}".format(*gst.fps_fraction(opt["fps"])))
    return ",".join(fields)


def _set(name, **props):
    """A configure callback that sets element properties (paths and URIs need no quoting)."""
    def configure(pipeline):
        element = pipeline.get_by_name(name)
        for key, value in props.items():
            element.set_property(key, value)
    return configure


def _csi(uri, opt):
    sensor = uri[len("csi://"):] or "0"
    if not sensor.isdigit():
        raise SourceError("csi:// wants a sensor number, e.g. csi://0, not '{}'".format(uri))
    gst.require(["nvarguscamerasrc", "nvvidconv"], SourceError)
    opt = dict(opt, width=opt["width"] or 1280, height=opt["height"] or 720,
               fps=opt["fps"] or 30)
    desc = ("nvarguscamerasrc sensor-id={} ! {},format=NV12 ! nvvidconv flip-method={} ! "
            "video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! {}").format(
        sensor, _mode_caps("video/x-raw(memory:NVMM)", opt), int(opt["flip_method"]),
        _appsink(True))
    return GstSource(uri, desc, True, opt)


def _v4l2(uri, opt):
    device = uri[len("v4l2://"):] if uri.startswith("v4l2://") else uri
    if device.isdigit():
        device = "/dev/video" + device
    if not os.path.exists(device) and not opt["retry_open"]:
        raise SourceError("camera {} is absent (no such device); check the cable and "
                          "`ls /dev/video*`".format(device))
    gst.require(["v4l2src"], SourceError)
    fmt = opt["format"]
    if fmt == "mjpeg":
        # The Jetson decodes MJPEG in hardware; elsewhere jpegdec does it on the CPU.
        decoder = "nvv4l2decoder mjpeg=1" if gst.has_element("nvv4l2decoder") else "jpegdec"
        head = "{} ! {}".format(_mode_caps("image/jpeg", opt), decoder)
    elif fmt == "raw":
        head = _mode_caps("video/x-raw", opt)
    elif fmt == "auto" and not (opt["width"] or opt["fps"]):
        head = "decodebin"  # the camera's default mode; decodebin decodes what needs it
    elif fmt == "auto":
        # Raw or MJPEG, whichever the camera offers in this mode (many USB cameras give
        # 720p30 only as MJPEG); decodebin passes raw through and decodes the rest.
        head = 'capsfilter caps="{};{}" ! decodebin'.format(
            _mode_caps("video/x-raw", opt), _mode_caps("image/jpeg", opt))
    else:
        raise ConfigError("source option format must be auto, raw or mjpeg, not "
                          "'{}'".format(fmt))
    desc = "v4l2src name=src ! {} ! {} ! {}".format(head, _to_bgr(), _appsink(True))
    return GstSource(uri, desc, True, opt, _set("src", device=device))


def _rtsp(uri, opt):
    gst.require(["rtspsrc", "decodebin"], SourceError)
    # The caps filter keeps the video stream only: an audio pad would stay unlinked.
    desc = ("rtspsrc name=src latency={} protocols={} ! application/x-rtp,media=video ! "
            "decodebin ! {} ! {}").format(int(opt["latency"]), opt["protocols"], _to_bgr(),
                                          _appsink(True))
    return GstSource(uri, desc, True, opt, _set("src", location=uri))


def _test(uri, opt):
    query = dict((k, v[-1]) for k, v in parse_qs(urlsplit(uri).query).items())
    live = query.get("is-live", "false").lower() in ("1", "true", "yes")
    desc = ("videotestsrc pattern={} is-live={} num-buffers={} ! "
            "video/x-raw,width={},height={},framerate={}/1 ! {} ! {}").format(
        query.get("pattern", "smpte"), "true" if live else "false",
        int(query.get("num-buffers", -1)), int(query.get("width", 320)),
        int(query.get("height", 240)), int(query.get("fps", 30)), _to_bgr(), _appsink(live))
    return GstSource(uri, desc, live, opt)


def mp4_problem(path):
    """Why an MP4/MOV file cannot play (no index: an interrupted recording), else None.

    Checked before GStreamer because decodebin can swallow qtdemux's error on such a file
    and then neither plays nor fails until the open timeout.
    """
    import struct
    size = os.path.getsize(path)
    offset, seen = 0, []
    with open(path, "rb") as f:
        while offset + 8 <= size:
            f.seek(offset)
            length, kind = struct.unpack(">I4s", f.read(8))
            if length == 1:
                length = struct.unpack(">Q", f.read(8))[0]
            elif length == 0:
                length = size - offset
            if length < 8:
                return "corrupt MP4 box at byte {}".format(offset)
            seen.append(kind)
            offset += length
    if b"moov" not in seen and b"moof" not in seen:
        return ("no 'moov' index: the file is truncated or its recording was interrupted "
                "before it was finalised")
    return None


def _file(uri, path, opt):
    gst.require(["filesrc", "decodebin", "videoconvert", "appsink"], SourceError)
    if path.lower().endswith((".mp4", ".mov", ".m4v")):
        problem = mp4_problem(path)
        if problem:
            raise SourceError("cannot play {}: {}".format(path, problem))
    # decodebin picks the decoder: nvv4l2decoder on the Jetson, avdec_h264 elsewhere.
    # It exposes video only: an audio or subtitle pad (random bytes can type-find as
    # subtitles) would stay unlinked and the file would neither play nor fail.
    desc = ('filesrc name=src ! decodebin caps="video/x-raw(ANY)" expose-all-streams=false'
            " ! {} ! {}").format(_to_bgr(), _appsink(False))
    try:
        return GstSource(uri, desc, False, opt, _set("src", location=path))
    except SourceError as exc:
        if "Missing decoder: " in str(exc):  # what decodebin found, e.g. "Timed Text (..)"
            found = str(exc).split("Missing decoder: ")[-1][:-1]
            raise SourceError("cannot open {}: no video stream that can be decoded "
                              "(found {})".format(path, found))
        raise


def first_frames(source, count, should_stop=None, timeout=0.5):
    """Up to ``count`` frames read ahead (their timestamps give a file's frame rate)."""
    frames = []
    while len(frames) < count and source.is_streaming and not (should_stop and should_stop()):
        frame = source.read(timeout=timeout)
        if frame is not None:
            frames.append(frame)
    return frames


def fps_from(frames):
    """Frame rate from two frames' timestamps, None when unknown (stills, no pts)."""
    if len(frames) < 2 or frames[0].pts is None or frames[1].pts is None:
        return None
    step = frames[1].pts - frames[0].pts
    return round(1.0 / step, 3) if 0.001 < step < 10 else None
