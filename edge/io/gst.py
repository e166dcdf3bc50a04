"""GStreamer through PyGObject: initialisation, element checks, pipelines, bus messages.

Sources and sinks share these helpers so that every missing element, failed state change
and bus error is reported the same way: with the element's name and, for a missing one,
the Debian/JetPack package that provides it. No GLib main loop is needed here: buses are
polled from the caller's thread (the RTSP server sink runs its own loop).
"""
import logging
import re
import time

log = logging.getLogger(__name__)

_BASE = "gstreamer1.0-plugins-base"
_GOOD = "gstreamer1.0-plugins-good"
_BAD = "gstreamer1.0-plugins-bad"
_JETPACK = "nvidia-l4t-gstreamer (JetPack; install JetPack 4.6 / L4T r32.7 on the Jetson)"

# Which package provides each element this project uses (Debian/Ubuntu names; JetPack
# for the nv* elements). Used only to say what to install when an element is missing.
ELEMENT_PACKAGES = {
    "filesrc": "libgstreamer1.0-0 (GStreamer core)",
    "filesink": "libgstreamer1.0-0 (GStreamer core)",
    "queue": "libgstreamer1.0-0 (GStreamer core)",
    "appsrc": _BASE, "appsink": _BASE, "videoconvert": _BASE, "videoscale": _BASE,
    "videotestsrc": _BASE, "decodebin": _BASE, "uridecodebin": _BASE, "videorate": _BASE,
    "jpegdec": _GOOD, "jpegenc": _GOOD, "v4l2src": _GOOD, "rtspsrc": _GOOD,
    "rtph264pay": _GOOD, "rtph264depay": _GOOD, "qtdemux": _GOOD, "mp4mux": _GOOD,
    "matroskamux": _GOOD, "matroskademux": _GOOD, "avimux": _GOOD, "autovideosink": _GOOD,
    "h264parse": _BAD, "openh264enc": _BAD, "openh264dec": _BAD,
    "x264enc": "gstreamer1.0-plugins-ugly",
    "avdec_h264": "gstreamer1.0-libav",
    "rtspclientsink": "gstreamer1.0-rtsp",
    "ximagesink": "gstreamer1.0-x", "xvimagesink": "gstreamer1.0-x",
    "glimagesink": "gstreamer1.0-gl", "waylandsink": _BAD,
    "nvarguscamerasrc": _JETPACK, "nvvidconv": _JETPACK, "nvv4l2decoder": _JETPACK,
    "nvv4l2h264enc": _JETPACK, "nvjpegdec": _JETPACK, "nv3dsink": _JETPACK,
    "nveglglessink": _JETPACK,
}

_Gst = None


def init(error=RuntimeError):
    """Import and initialise GStreamer once; return the Gst module.

    Raises `error` with what to install when PyGObject or GStreamer's typelibs are absent.
    """
    global _Gst
    if _Gst is not None:
        return _Gst
    try:
        import gi
        gi.require_version("Gst", "1.0")
        gi.require_version("GstApp", "1.0")
        from gi.repository import Gst, GstApp  # noqa: F401 (GstApp: appsink/appsrc methods)
    except (ImportError, ValueError) as exc:
        raise error("GStreamer for Python is not available ({}): install python3-gi "
                    "gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 (Debian/JetPack), or "
                    "pip install 'pygobject<3.51' with GStreamer installed".format(exc))
    Gst.init(None)
    _Gst = Gst
    return Gst


def has_element(name):
    """True when a GStreamer element factory called `name` is installed."""
    return init().ElementFactory.find(name) is not None


def on_jetson():
    """True on a Jetson with JetPack's GStreamer (hardware convert/decode/encode)."""
    return has_element("nvvidconv")


def missing_message(name):
    """A sentence naming a missing element and the package that provides it."""
    package = ELEMENT_PACKAGES.get(name)
    hint = "install {}".format(package) if package else "no known package provides it"
    return "GStreamer element '{}' is not installed: {}".format(name, hint)


def require(names, error):
    """Raise `error` naming the first element of `names` that is not installed."""
    init(error)
    for name in names:
        if not has_element(name):
            raise error(missing_message(name))


def launch(description, error):
    """Build a pipeline from a gst-launch description; raise `error` on a bad one.

    A missing element is reported with the package that provides it.
    """
    Gst = init(error)
    from gi.repository import GLib
    try:
        pipeline = Gst.parse_launch(description)
    except GLib.Error as exc:
        found = re.search(r'no element "([^"]+)"', str(exc))
        if found:
            raise error(missing_message(found.group(1)))
        raise error("cannot build GStreamer pipeline '{}': {}".format(description, exc))
    return pipeline


def describe(message):
    """Text of an ERROR/WARNING bus message: element, message and debug detail."""
    if message.type == _Gst.MessageType.ERROR:
        err, debug = message.parse_error()
    else:
        err, debug = message.parse_warning()
    source = message.src.get_name() if message.src is not None else "?"
    text = "{}: {}".format(source, err.message)
    if debug:
        # The debug string is long (file:line:function); its last part says the most.
        text += " ({})".format(debug.strip().splitlines()[-1][-200:])
    return text


def poll(bus, warnings=None):
    """Drain a bus without blocking: ("error", text), ("eos", None) or None.

    Warnings (a decoder concealing corrupt data) are logged at debug level and appended
    to the `warnings` list when one is given; the first error or EOS wins.
    """
    Gst = _Gst
    kinds = Gst.MessageType.ERROR | Gst.MessageType.EOS | Gst.MessageType.WARNING
    while True:
        message = bus.pop_filtered(kinds)
        if message is None:
            return None
        if message.type == Gst.MessageType.WARNING:
            text = describe(message)
            log.debug("GStreamer warning: %s", text)
            if warnings is not None and len(warnings) < 100:  # bounded: a service runs for months
                warnings.append(text)
        elif message.type == Gst.MessageType.ERROR:
            return "error", describe(message)
        else:
            return "eos", None


def wait_bus(bus, timeout):
    """Block up to `timeout` seconds for an ERROR or EOS; same result as `poll`."""
    Gst = _Gst
    kinds = Gst.MessageType.ERROR | Gst.MessageType.EOS
    message = bus.timed_pop_filtered(int(timeout * Gst.SECOND), kinds)
    if message is None:
        return None
    if message.type == Gst.MessageType.ERROR:
        return "error", describe(message)
    return "eos", None


def play(pipeline, error, timeout=10.0, wait=True):
    """Set a pipeline PLAYING and wait until it runs or fails; raise `error` on failure.

    Live pipelines report NO_PREROLL; a file pipeline prerolls its first buffer. An
    asynchronous failure (a missing file, a refused connection) arrives on the bus.
    With wait=False (an appsrc pipeline cannot preroll before its first push) only an
    immediate failure is reported.
    """
    Gst = _Gst
    bus = pipeline.get_bus()
    if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
        found = poll(bus) or wait_bus(bus, 0.5)
        stop(pipeline)
        raise error("pipeline failed to start: {}".format(found[1] if found else "unknown"))
    if not wait:
        return None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result, _, _ = pipeline.get_state(int(0.05 * Gst.SECOND))
        found = poll(bus)
        if found and found[0] == "error":
            stop(pipeline)
            raise error(found[1])
        if result in (Gst.StateChangeReturn.SUCCESS, Gst.StateChangeReturn.NO_PREROLL):
            return found  # an EOS already (an empty file) is left for the caller
        if result == Gst.StateChangeReturn.FAILURE:
            found = found or wait_bus(bus, 0.5)  # decodebin posts its error after the failure
            stop(pipeline)
            raise error("pipeline failed to start: {}".format(found[1] if found else "unknown"))
    stop(pipeline)
    raise error("pipeline did not start within {:.0f} s".format(timeout))


def is_playing(element):
    """Whether `element` is in the PLAYING state now (does not wait for a change)."""
    return element.get_state(0)[1] == _Gst.State.PLAYING


def stop(pipeline):
    """Set a pipeline to NULL (releases devices, files and sockets)."""
    if pipeline is not None:
        pipeline.set_state(_Gst.State.NULL)


def sample_to_bgr(sample):
    """Copy an appsink sample of video/x-raw,format=BGR into an HxWx3 uint8 array.

    Rows may be padded to 4 bytes, so the stride comes from the buffer size. The bytes
    come from extract_dup, which behaves the same in JetPack's older PyGObject.
    """
    import numpy as np
    structure = sample.get_caps().get_structure(0)
    width = structure.get_value("width")
    height = structure.get_value("height")
    buf = sample.get_buffer()
    data = buf.extract_dup(0, buf.get_size())
    stride = len(data) // height
    rows = np.frombuffer(data, np.uint8, count=stride * height).reshape(height, stride)
    # A writable copy without the padding: callers draw on frames.
    return np.array(rows[:, :width * 3].reshape(height, width, 3))


def buffer_pts(sample):
    """Presentation time of a sample's buffer in seconds, or None when it has none."""
    pts = sample.get_buffer().pts
    if pts == _Gst.CLOCK_TIME_NONE:
        return None
    return pts / float(_Gst.SECOND)


def bgr_to_buffer(image, pts=None, duration=None):
    """Wrap a contiguous BGR uint8 image in a Gst.Buffer with optional times (seconds)."""
    import numpy as np
    Gst = _Gst
    buf = Gst.Buffer.new_wrapped(np.ascontiguousarray(image).tobytes())
    if pts is not None:
        buf.pts = int(pts * Gst.SECOND)
    if duration is not None:
        buf.duration = int(duration * Gst.SECOND)
    return buf


def bgr_caps(width, height, fps=None):
    """Caps string of raw BGR video, with a framerate when `fps` is given."""
    caps = "video/x-raw,format=BGR,width={},height={}".format(width, height)
    if fps:
        num, den = fps_fraction(fps)
        caps += ",framerate={}/{}".format(num, den)
    return caps


def fps_fraction(fps):
    """A frame rate as a GStreamer fraction (30 -> 30/1, 29.97 -> 2997/100)."""
    fps = float(fps)
    if fps.is_integer():
        return int(fps), 1
    return int(round(fps * 100)), 100


def h264_encoder(bitrate, error=RuntimeError, keyframe_interval=30):
    """A pipeline fragment encoding to H.264: the Jetson's hardware encoder when present, else x264.

    A keyframe (IDR) comes every `keyframe_interval` frames: a viewer who joins a live
    stream sees grey until the next one, so live outputs keep it to about a second (the
    encoders' own defaults, 250 and 256 frames, are up to ten seconds of grey at 25 fps).
    Raises ``error`` naming the package when neither is installed.
    """
    interval = max(1, int(keyframe_interval))
    if has_element("nvv4l2h264enc") and has_element("nvvidconv"):
        return ("videoconvert ! video/x-raw,format=BGRx ! nvvidconv ! "
                "video/x-raw(memory:NVMM),format=I420 ! nvv4l2h264enc bitrate={} "
                "insert-sps-pps=true iframeinterval={} idrinterval={}".format(
                    int(bitrate) * 1000, interval, interval))
    require(["x264enc"], error)
    # I420 explicitly: from BGR videoconvert would pick Y444, which few players decode.
    return ("videoconvert ! video/x-raw,format=I420 ! x264enc tune=zerolatency "
            "speed-preset=ultrafast bitrate={} key-int-max={}".format(int(bitrate), interval))
