"""The one HTTP server of the service: health, /metrics, the live stream and the page.

``WebServer(bind, token)`` listens on ``health.http`` (``HOST:PORT``; 127.0.0.1 unless a
host is given) and refuses to listen beyond loopback without a token. One rule covers
every route: when a token is set, a request carries it as ``Authorization: Bearer TOKEN``
or ``?token=TOKEN`` (the page passes its own ``?token=`` on to the stream and the state),
or gets 401. Routes are registered with ``route(path, func)``; ``func(handler, query)``
answers through ``send`` (or writes a stream itself). Standard library only (Python 3.6);
each client has its own thread, so no client can hold up the camera loop.
"""
import json
import logging
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn
from urllib.parse import parse_qs, urlsplit

from edge.common import is_loopback, token_ok
from edge.errors import ConfigError

log = logging.getLogger(__name__)

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "page.html")
# The page loads nothing from elsewhere (the device is offline) and may not be framed.
PAGE_POLICY = ("default-src 'none'; img-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; "
               "script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
               "frame-ancestors 'none'")


def parse_bind(spec):
    """"HOST:PORT", ":PORT", "PORT", "[::1]:PORT" or an int -> (host, port); host 127.0.0.1 by default."""
    text = str(spec).strip()
    host = "127.0.0.1"
    if text.startswith("["):
        host, _, text = text[1:].partition("]")
        text = text.lstrip(":")
    elif ":" in text:
        name, _, text = text.rpartition(":")
        host = name or host
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ConfigError("health.http: %r is not HOST:PORT or PORT (port 0..65535)" % (spec,))
    return host, port


class _Server(ThreadingMixIn, HTTPServer):
    # ThreadingHTTPServer is Python 3.7+; this is the same thing for JetPack's 3.6.
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class WebServer(object):
    """An HTTP server in a daemon thread with one token rule (see the module docstring)."""

    def __init__(self, bind, token=None):
        host, port = parse_bind(bind)
        self.token = token or None
        if not is_loopback(host) and not self.token:
            raise ConfigError(
                "health.http binds to %s, reachable from the network, without a token: "
                "set health.token (or bind 127.0.0.1)" % host)
        self.routes = {}
        server_class = _Server6 if ":" in host else _Server
        try:
            self._server = server_class((host, port), _Handler)
        except OSError as exc:
            raise ConfigError("health.http: cannot listen on %s:%d: %s" % (host, port, exc))
        self._server.web = self
        self.host = host
        # A short poll interval: close() waits one interval for the server to stop.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,),
                                        name="http")
        self._thread.daemon = True
        self._thread.start()
        log.info("HTTP on http://%s:%d/ (health, metrics, page)%s", host, self.address[1],
                 " (token required)" if self.token else "")

    @property
    def address(self):
        """(host, port) the server listens on, or None once closed."""
        return self._server.server_address[:2] if self._server else None

    def route(self, path, func):
        """Answer GET ``path`` with ``func(handler, query)``."""
        self.routes[path] = func

    def authorized(self, headers, query):
        """Whether a request carries the token (always true when none is configured)."""
        return token_ok(self.token, headers, query)

    def close(self):
        """Stop listening; clients being served finish in their own (daemon) threads."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None


def send(handler, code, body, content_type="application/json", headers=None):
    """Answer with ``body`` (bytes, str, or a dict/list sent as JSON)."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body, sort_keys=True) + "\n"
    if not isinstance(body, bytes):
        body = body.encode("utf-8")
    handler.send_response(code)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.send_header("Cache-Control", "no-store")
    handler.send_header("X-Content-Type-Options", "nosniff")
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(body)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlsplit(self.path)
        web = self.server.web
        path = url.path if url.path in web.routes else url.path.rstrip("/") or "/"
        func = web.routes.get(path)
        query = parse_qs(url.query)
        if func is None:
            send(self, 404, {"error": "not found: try %s" % ", ".join(sorted(web.routes))})
        elif not web.authorized(self.headers, query):
            send(self, 401, {"error": "token required"}, headers={"WWW-Authenticate": "Bearer"})
        else:
            try:
                func(self, query)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client went away
            except Exception:  # noqa: one bad request must not take the server down
                log.exception("HTTP %s failed", url.path)

    def log_message(self, fmt, *args):
        log.debug("http %s: " + fmt, self.client_address[0], *args)


def page_route():
    """The route of the page (``page.html`` beside this module), read once."""
    with open(PAGE, "rb") as f:
        body = f.read()

    def serve(handler, query):
        send(handler, 200, body, "text/html; charset=utf-8",
             {"Content-Security-Policy": PAGE_POLICY, "Referrer-Policy": "no-referrer"})
    return serve


def json_route(produce):
    """A route answering ``produce()`` as JSON."""
    def serve(handler, query):
        send(handler, 200, produce())
    return serve
