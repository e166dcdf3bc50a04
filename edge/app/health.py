"""The service's health, for the watchdog, Docker and an operator (Python 3.6, stdlib).

``Health.update(**fields)`` is called from the main loop. It keeps the latest fields and
rewrites a small JSON file atomically (temporary file + rename, at most once a second, at
once when the source state changes), and optionally serves the same JSON at
``GET /health`` over HTTP, on the service's one HTTP server (``edge.ops.web``, which also
serves /metrics and the page). The endpoint binds to 127.0.0.1 unless a host is given,
and refuses to start on any other address without a token.

``python -m edge.health PATH_OR_URL`` prints the status and exits non-zero when the last
frame is too old or the service stopped updating it (for cron, Docker HEALTHCHECK, an
operator's shell).
"""
import argparse
import json
import logging
import os
import threading
import time
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from edge.common import atomic_write
from edge.ops.web import WebServer, parse_bind, send  # noqa: F401 (parse_bind: part of this API)

log = logging.getLogger(__name__)

# A frame older than this (seconds) makes the service "stale" (camera gone, loop hung).
STALE_AFTER = 10.0


class Health(object):
    """Latest service state, written to ``path`` and/or served over ``http``.

    path: JSON file (None: no file). http: "HOST:PORT", "PORT" or an int (None: no
    endpoint; port 0 picks a free port, see ``http_address``). token: required by the
    endpoint (Authorization: Bearer TOKEN or ?token=TOKEN); mandatory off loopback.
    server: a ``WebServer`` to serve /health on instead (the service's one server; it
    brings its own bind and token, and whoever made it closes it).
    """

    def __init__(self, path=None, http=None, token=None, stale_after=STALE_AFTER,
                 min_interval=1.0, server=None):
        self.path = path
        self.token = token or None
        self.stale_after = float(stale_after)
        self.min_interval = float(min_interval)
        self._started = time.monotonic()
        self._state = {"source_state": "opening", "last_frame_time": None, "fps": None,
                       "faces": 0, "frames": 0, "errors": 0}
        self._lock = threading.Lock()
        self._last_write = None
        self._updated = time.time()  # wall time of the last update(): a hung loop stops it
        self._fps_mark = None  # (monotonic time, frames) at the last FPS estimate
        self._write_failed = False
        self._closed = False
        self._server, self._owns_server = server, False
        if path:
            parent = os.path.dirname(os.path.abspath(path))
            os.makedirs(parent, exist_ok=True)
        if server is None and http not in (None, "", False):
            self._server, self._owns_server = WebServer(http, token), True
            self._server.route("/", self._serve)  # a health endpoint of its own: / is /health
        if self._server is not None:
            self._server.route("/health", self._serve)

    # -- state -------------------------------------------------------------------------

    def update(self, **fields):
        """Merge fields (last_frame_time, fps, source_state, faces, frames, errors, ...).

        Writes the file when a second has passed since the last write, or at once when
        source_state changed. Never raises: health must not take the service down.
        """
        with self._lock:
            self._updated = time.time()
            changed = ("source_state" in fields
                       and fields["source_state"] != self._state.get("source_state"))
            self._state.update(fields)
            if "fps" not in fields:
                self._estimate_fps()
            now = time.monotonic()
            due = self._last_write is None or now - self._last_write >= self.min_interval
        if changed or due:
            self.write()

    def _estimate_fps(self):
        # Frames per second over the last write interval, when the caller gives only a count.
        frames = self._state.get("frames")
        if not isinstance(frames, int):
            return
        now = time.monotonic()
        if self._fps_mark is None:
            self._fps_mark = (now, frames)
            return
        elapsed = now - self._fps_mark[0]
        if elapsed >= self.min_interval:
            self._state["fps"] = round((frames - self._fps_mark[1]) / elapsed, 2)
            self._fps_mark = (now, frames)

    def fields(self):
        """A copy of the fields reported so far (to carry them over to a new Health)."""
        with self._lock:
            return dict(self._state)

    def snapshot(self):
        """The health document: the fields plus status, age, uptime, pid, updated and time.

        ``updated`` is when the main loop last reported, not when this was asked: the HTTP
        thread keeps answering while a hung loop does not.
        """
        with self._lock:
            doc = dict(self._state)
            doc["updated"] = self._updated
        now = time.time()
        last = doc.get("last_frame_time")
        doc["age"] = round(now - last, 3) if last else None
        silent = now - doc["updated"] > self.stale_after
        if self._closed:
            doc["status"] = "stopped"
        elif silent or (last is not None and doc["age"] > self.stale_after):
            doc["status"] = "stale"
        elif last is None:
            doc["status"] = "starting"
        else:
            doc["status"] = "ok"
        doc["stale_after"] = self.stale_after
        doc["uptime"] = round(time.monotonic() - self._started, 3)
        doc["pid"] = os.getpid()
        doc["time"] = now
        return doc

    def write(self):
        """Write the health file now (atomically: readers never see half a file)."""
        self._last_write = time.monotonic()
        if not self.path:
            return
        doc = self.snapshot()
        try:
            atomic_write(self.path, json.dumps(doc, sort_keys=True) + "\n")
            if self._write_failed:
                log.info("health file %s is written again", self.path)
                self._write_failed = False
        except OSError as exc:
            # A full disk must not stop the service: say it once, keep trying each second.
            if not self._write_failed:
                log.error("cannot write health file %s: %s", self.path, exc)
                self._write_failed = True

    def close(self):
        """Write the final state (status "stopped") and stop the HTTP endpoint."""
        if self._closed:
            return
        self._closed = True
        self.write()
        if self._server is not None and self._owns_server:
            self._server.close()
        self._server = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- HTTP --------------------------------------------------------------------------

    @property
    def http_address(self):
        """(host, port) the endpoint listens on, or None."""
        return self._server.address if self._server else None

    def _serve(self, handler, query):
        """GET /health -> the JSON document (200 when ok/starting, 503 when stale/stopped)."""
        doc = self.snapshot()
        send(handler, 200 if doc["status"] in ("ok", "starting") else 503, doc)


# -- the operator's check ------------------------------------------------------------

def read_health(where, token=None, timeout=5.0):
    """The health document from a file path or an http(s):// URL (raises OSError/ValueError)."""
    if where.startswith(("http://", "https://")):
        request = Request(where)
        if token:
            request.add_header("Authorization", "Bearer " + token)
        try:
            with urlopen(request, timeout=timeout) as response:
                return json.loads(response.read().decode("utf-8"))
        except HTTPError as exc:
            if exc.code == 503:  # stale: the body is still the health document
                return json.loads(exc.read().decode("utf-8"))
            raise OSError("%s: HTTP %d %s" % (where, exc.code, exc.reason))
        except URLError as exc:
            raise OSError("%s: %s" % (where, exc.reason))
    with open(where) as f:
        return json.load(f)


def verdict(doc, max_age, now=None):
    """(healthy, reason) for a health document: recent frames from a loop that still reports."""
    now = time.time() if now is None else now
    if doc.get("status") == "stopped":
        return False, "service stopped (pid %s)" % doc.get("pid")
    problems = []
    last, updated = doc.get("last_frame_time"), doc.get("updated")
    if last is not None and now - last > max_age:
        problems.append("last frame %.1f s ago (source %s)" % (now - last, doc.get("source_state")))
    if updated is None or now - updated > max_age:
        problems.append("service has not reported for %s s (main loop hung, or gone)"
                        % ("?" if updated is None else "%.0f" % (now - updated)))
    if problems:
        return False, "; ".join(problems)
    # Healthy, but slower than it should be: say so (the owner reads this line).
    degraded = "; classifier on %s: %s" % (doc.get("backend"), doc["fallback"]) if doc.get("fallback") else ""
    if doc.get("detector_fallback"):
        degraded += "; detector on %s: %s" % (doc.get("detector_backend"), doc["detector_fallback"])
    if last is None:
        return True, "starting (source %s)%s" % (doc.get("source_state"), degraded)
    return True, "ok: last frame %.1f s ago, %s fps, %s faces, source %s%s" % (
        now - last, doc.get("fps"), doc.get("faces"), doc.get("source_state"), degraded)


def main(argv=None):
    """`python -m edge.health PATH_OR_URL`: exit 0 healthy, 1 unhealthy, 2 unreadable."""
    parser = argparse.ArgumentParser(
        prog="python -m edge.health", description=main.__doc__.split(":", 1)[1].strip())
    parser.add_argument("where", help="health file path or http://127.0.0.1:PORT/health")
    parser.add_argument("--max-age", type=float, default=30.0,
                        help="seconds after which the last frame is too old (default 30)")
    parser.add_argument("--token", default=os.environ.get("MASKGATE_HEALTH_TOKEN"),
                        help="endpoint token (default: $MASKGATE_HEALTH_TOKEN)")
    parser.add_argument("--json", action="store_true", help="also print the document")
    args = parser.parse_args(argv)
    try:
        doc = read_health(args.where, token=args.token)
    except (OSError, ValueError) as exc:
        print("unreadable: %s" % exc)
        return 2
    healthy, reason = verdict(doc, args.max_age)
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    print(("healthy: " if healthy else "UNHEALTHY: ") + reason)
    return 0 if healthy else 1


if __name__ == "__main__":
    raise SystemExit(main())
