"""The two contracts of video I/O: a ``Source`` gives ``Frame``s, a ``Sink`` takes BGR images.

Every input (``edge.io.sources``) and output (``edge.io.sinks``, ``edge.io.netsinks``) is one
of these, so the loop needs nothing else to know about cameras, files and networks.
"""
import logging

log = logging.getLogger(__name__)


class Frame(object):
    """One input frame: `image` HxWx3 uint8 BGR, `index` (0, 1, ...), `pts` in seconds or
    None, `name` (the file name for stills and folders, else None)."""

    __slots__ = ("image", "index", "pts", "name")

    def __init__(self, image, index, pts=None, name=None):
        self.image = image
        self.index = index
        self.pts = pts
        self.name = name

    def __repr__(self):
        return "Frame(index={}, shape={}, pts={}, name={})".format(
            self.index, self.image.shape, self.pts, self.name)


class Source(object):
    """Common surface of every source; iterate it or call `read` until not streaming."""

    is_live = False

    def __init__(self, uri):
        self.uri = uri
        self.state = "opening"

    @property
    def is_streaming(self):
        """False once the source reached its end or was closed."""
        return self.state not in ("eos", "closed")

    def read(self, timeout=1.0):
        """The next Frame, or None when none came within `timeout` seconds."""
        raise NotImplementedError

    def close(self):
        """Release the device, file or connection; safe to call twice."""
        self.state = "closed"

    def __iter__(self):
        while self.is_streaming:
            frame = self.read()
            if frame is not None:
                yield frame

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Sink(object):
    """Common surface: `write(image)`, `close()`, `.failed` (None or the reason)."""

    def __init__(self, uri):
        self.uri = uri
        self.failed = None
        self.frames = 0

    def write(self, image):
        """Send one BGR uint8 frame; never raises (a failure disables the sink)."""
        if self.failed is not None:
            return
        if not _is_bgr(image):  # one bad frame is skipped, it does not kill the output
            log.warning("output %s: skipped a frame that is not HxWx3 uint8 (%s)", self.uri,
                        getattr(image, "shape", type(image).__name__))
            return
        try:
            self._write(image)
            self.frames += 1
        except Exception as exc:  # the loop must survive any output failure
            self._fail("{}: {}".format(type(exc).__name__, exc))

    def _write(self, image):
        pass

    def _fail(self, reason):
        if self.failed is None:
            self.failed = reason
            log.error("output %s failed (%s); it is disabled, the service goes on",
                      self.uri, reason)
            self._shutdown()

    def _shutdown(self):
        pass

    def close(self):
        """Flush and release the output; safe to call twice."""
        self._shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        # Dropped without close(): at least release the pipeline, threads and port.
        try:
            self._shutdown()
        except Exception:
            pass


def _is_bgr(image):
    return getattr(image, "dtype", None) == "uint8" and image.ndim == 3 and \
        image.shape[2] == 3 and image.shape[0] > 0 and image.shape[1] > 0
