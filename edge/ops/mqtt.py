"""Events to an MQTT broker: ``mqtt://[user:pass@]host[:port]/PREFIX`` (``mqtts://`` for TLS).

``MqttPublisher.publish(subtopic, doc)`` is what the camera loop calls: it puts the JSON
on a bounded buffer and returns (microseconds; the loop never waits on the network). A
thread of this module hands buffered messages to paho-mqtt (QoS 1) while the broker is
connected, at most ``inflight`` unacknowledged at a time; paho's own thread connects,
reconnects with back-off and re-sends what was not acknowledged. While the broker is
away the buffer fills; when it is full the oldest message is dropped and counted
(``dropped``). So an outage loses at most what exceeds ``buffer`` (plus ``inflight``
already handed over, which paho re-sends): nothing else.

``PREFIX/online`` is retained: ``{"online": true}`` on connect, and the broker's last will
``{"online": false}`` if the device vanishes. The password is never logged.

paho-mqtt 1.6.x: the last line that runs on JetPack 4.6's Python 3.6 (2.x needs 3.7).
"""
import collections
import json
import logging
import socket
import ssl
import threading
import time
from urllib.parse import unquote, urlsplit

from edge.common import redact
from edge.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "maskgate"


def parse_url(url):
    """``mqtt(s)://[user:pass@]host[:port]/PREFIX`` -> dict host, port, tls, username,
    password, prefix (default "maskgate"); ConfigError when it is not one."""
    parts = urlsplit(str(url))
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError("events.mqtt: %r is not mqtt://[USER:PASS@]HOST[:PORT]/PREFIX "
                          "(or mqtts:// for TLS)" % redact(str(url)))
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 0 < port < 65536:
        raise ConfigError("events.mqtt: bad port in %s" % redact(str(url)))
    prefix = parts.path.strip("/") or DEFAULT_PREFIX
    if any(c in prefix for c in "+#") or "//" in prefix:
        raise ConfigError("events.mqtt: topic prefix %r may not hold + # or an empty level" % prefix)
    tls = parts.scheme == "mqtts"
    return {"host": parts.hostname, "port": port or (8883 if tls else 1883), "tls": tls,
            "username": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password is not None else None,
            "prefix": prefix}


def _paho():
    try:
        import paho.mqtt.client as client
    except ImportError:
        raise ConfigError("events.mqtt needs paho-mqtt: pip install 'paho-mqtt>=1.6,<2' "
                          "(the Nano's installer and `pip install .[mqtt]` add it)")
    return client


class MqttPublisher(object):
    """Publishes JSON documents under the URL's prefix (see the module docstring).

    url: the broker URL; ca_file: CA bundle for mqtts:// (None: the system's);
    buffer: messages kept while the broker is away; inflight: unacknowledged messages
    handed to paho; backoff: (first, longest) reconnect wait in seconds.
    """

    def __init__(self, url, ca_file=None, buffer=1000, inflight=20, backoff=(0.5, 30.0),
                 keepalive=30, client_id=None):
        self.settings = parse_url(url)
        self.url = redact(str(url))
        self.prefix = self.settings["prefix"]
        self.buffer = max(1, int(buffer))
        self.inflight_max = max(1, int(inflight))
        self.sent = self.dropped = self.failed = self.connects = 0
        self.connected = False
        self._queue = collections.deque()
        self._inflight = 0
        self._cond = threading.Condition()
        self._closed = False
        self._last_error = None
        mqtt = _paho()
        self._mqtt = mqtt
        cid = client_id or "maskgate-%s" % socket.gethostname()
        self._client = mqtt.Client(client_id=cid, clean_session=True)
        if self.settings["username"] is not None:
            self._client.username_pw_set(self.settings["username"], self.settings["password"])
        if self.settings["tls"]:
            # The standard library's defaults: certificate and host name checked.
            try:
                context = ssl.create_default_context(cafile=ca_file)
            except (IOError, OSError, ValueError) as exc:
                raise ConfigError("events.mqtt_ca: cannot use %s: %s" % (ca_file, exc))
            self._client.tls_set_context(context)
        self._client.will_set(self.topic("online"), json.dumps({"online": False}), qos=1,
                              retain=True)
        self._client.reconnect_delay_set(float(backoff[0]), float(max(backoff)))
        self._client.max_inflight_messages_set(self.inflight_max)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        # paho retries a failed connection (refused, unreachable, a TLS error) silently: keep
        # the reason, and say it once each time it changes.
        self._reconnect = self._client.reconnect
        self._client.reconnect = self._reconnect_logged
        # connect_async: name resolution and the connection happen in paho's thread.
        self._client.connect_async(self.settings["host"], self.settings["port"], keepalive)
        self._client.loop_start()
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-sender")
        self._sender.daemon = True
        self._sender.start()
        log.info("MQTT events to %s://%s:%d/%s", "mqtts" if self.settings["tls"] else "mqtt",
                 self.settings["host"], self.settings["port"], self.prefix)

    def topic(self, sub):
        """PREFIX/sub."""
        return "%s/%s" % (self.prefix, sub)

    # -- the camera loop's side -----------------------------------------------------------

    def publish(self, sub, doc, retain=False):
        """Queue ``doc`` (JSON-serialisable) for PREFIX/sub; never blocks, never raises."""
        try:
            payload = json.dumps(doc, separators=(",", ":"))
        except (TypeError, ValueError):
            log.exception("MQTT message for %s is not JSON", sub)
            return
        with self._cond:
            if self._closed:
                return
            if len(self._queue) >= self.buffer:
                self._queue.popleft()
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning("MQTT buffer of %d full (broker %s away or slower than the "
                                "messages): %d oldest message(s) dropped so far", self.buffer,
                                self.url, self.dropped)
            self._queue.append((self.topic(sub), payload, retain))
            self._cond.notify()

    @property
    def buffered(self):
        """Messages waiting in the buffer (not yet handed to paho)."""
        return len(self._queue)

    def stats(self):
        """Counters for metrics and status: connected, sent, dropped, buffered, inflight."""
        with self._cond:
            return {"connected": self.connected, "sent": self.sent, "dropped": self.dropped,
                    "buffered": len(self._queue), "inflight": self._inflight,
                    "connects": self.connects, "failed": self.failed}

    # -- the sender thread and paho's callbacks -------------------------------------------

    def _send_loop(self):
        while True:
            with self._cond:
                while not self._closed and not (self._queue and self.connected
                                                and self._inflight < self.inflight_max):
                    self._cond.wait(1.0)
                if self._closed and not (self._queue and self.connected):
                    return
                topic, payload, retain = self._queue.popleft()
                self._inflight += 1
            try:
                info = self._client.publish(topic, payload, qos=1, retain=retain)
                rc = info.rc
            except Exception as exc:  # noqa: a paho surprise must not end the thread
                rc = exc
            if rc not in (self._mqtt.MQTT_ERR_SUCCESS, self._mqtt.MQTT_ERR_NO_CONN):
                # Not taken by paho (NO_CONN is: it is re-sent on reconnect).
                with self._cond:
                    self._inflight -= 1
                    self.failed += 1
                log.warning("MQTT publish to %s refused: %s", topic, rc)

    def _reconnect_logged(self):
        try:
            return self._reconnect()
        except Exception as exc:
            self._say_error("cannot connect to MQTT broker %s: %s" % (self.url, exc))
            raise

    def _say_error(self, message):
        if message != self._last_error:
            log.error("%s (retrying with back-off)", message)
            self._last_error = message

    def _on_connect(self, client, userdata, flags, rc):
        if rc != 0:
            self._say_error("MQTT broker %s refused the connection: %s"
                            % (self.url, self._mqtt.connack_string(rc)))
            return
        self._last_error = None
        with self._cond:
            # First in line, through the sender like every message (so every ack is counted once).
            self._queue.appendleft((self.topic("online"), json.dumps({"online": True}), True))
            self.connected = True
            self.connects += 1
            # paho re-sends what it held unacknowledged; their acks come back through _on_publish.
            self._cond.notify_all()
        log.info("MQTT connected to %s", self.url)

    def _on_disconnect(self, client, userdata, rc):
        with self._cond:
            was, self.connected = self.connected, False
        if was and rc != 0:
            log.warning("MQTT connection to %s lost (%s); reconnecting with back-off, "
                        "buffering up to %d messages", self.url, self._mqtt.error_string(rc),
                        self.buffer)

    def _on_publish(self, client, userdata, mid):
        with self._cond:
            if self._inflight > 0:
                self._inflight -= 1
                self.sent += 1
            self._cond.notify_all()

    # -- the end ------------------------------------------------------------------------------

    def flush(self, timeout=2.0):
        """Wait up to ``timeout`` s for the buffer and in-flight messages to be acknowledged
        (a broker that is away may come back meanwhile); True when all were."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.1))
            return not (self._queue or self._inflight)

    def close(self, timeout=2.0):
        """Flush (while connected, up to ``timeout`` s), say offline, disconnect, stop the threads."""
        if self._closed:
            return
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._sender.join(timeout)
        if self.connected:
            info = self._client.publish(self.topic("online"), json.dumps({"online": False}),
                                        qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=1.0)
            except (TypeError, RuntimeError, ValueError):  # paho < 1.6 has no timeout
                pass
        self._client.disconnect()
        # loop_stop joins paho's thread, which may be in a connect attempt: not longer than this.
        stopper = threading.Thread(target=self._client.loop_stop, name="mqtt-stop")
        stopper.daemon = True
        stopper.start()
        stopper.join(timeout)
        left = len(self._queue) + self._inflight
        if left or self.dropped:
            log.warning("MQTT: %d message(s) not delivered at exit, %d dropped while the broker "
                        "was away", left, self.dropped)
