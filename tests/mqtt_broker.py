"""A real Mosquitto broker for the tests (Debian's `mosquitto`, which scripts/install-system-deps.sh
installs with --test), and a subscriber that records what arrives."""
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest


def free_port():
    """A TCP port nobody listens on now."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def _listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class Broker(object):
    """mosquitto on 127.0.0.1:port from a config of a few lines in ``folder``.

    Sessions and queued messages persist in ``folder`` (saved every second), so that a
    subscriber's session survives the broker being killed and started again.
    ``extra``: more config lines (TLS, passwords).
    """

    def __init__(self, folder, extra=()):
        binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
        if binary is None:
            pytest.skip("mosquitto not installed (scripts/install-system-deps.sh --test)")
        self.binary, self.folder, self.port = binary, str(folder), free_port()
        self.conf = os.path.join(self.folder, "mosquitto.conf")
        lines = ["listener %d 127.0.0.1" % self.port,
                 "persistence true", "persistence_location %s/" % self.folder,
                 "autosave_interval 1", "max_queued_messages 100000",
                 "log_dest file %s/mosquitto.log" % self.folder]
        if os.geteuid() == 0:
            lines.append("user root")  # as root it would switch to the mosquitto user
        lines += list(extra) or ["allow_anonymous true"]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.proc = None

    def start(self, timeout=10.0):
        self.proc = subprocess.Popen([self.binary, "-c", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while not _listening(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError("mosquitto exited: %s" % self.proc.stderr.read().decode())
            if time.monotonic() > deadline:
                raise RuntimeError("mosquitto did not listen on %d" % self.port)
            time.sleep(0.05)
        return self

    def kill(self, sig=signal.SIGKILL):
        """Kill the broker (SIGKILL: no goodbye to anyone) and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
        self.proc = None

    def url(self, prefix="test", scheme="mqtt", host="127.0.0.1", login=""):
        return "%s://%s%s:%d/%s" % (scheme, login, host, self.port, prefix)


class Subscriber(object):
    """A persistent-session QoS 1 subscriber to PREFIX/# that records (topic, payload)."""

    def __init__(self, broker, topic, client_id="maskgate-test-subscriber", tls_ca=None,
                 host="127.0.0.1", login=None):
        import paho.mqtt.client as mqtt
        self.messages, self._lock = [], threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(client_id=client_id, clean_session=False)
        if login:
            self.client.username_pw_set(*login)
        if tls_ca:
            import ssl
            self.client.tls_set_context(ssl.create_default_context(cafile=tls_ca))
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_connect = lambda client, userdata, flags, rc: rc == 0 and client.subscribe(topic, 1)
        self.client.connect(host, broker.port, 30)
        self.client.loop_start()
        assert self.subscribed.wait(10), "subscriber did not subscribe"

    def _on_message(self, client, userdata, message):
        with self._lock:
            self.messages.append((message.topic, message.payload))

    def received(self):
        with self._lock:
            return list(self.messages)

    def documents(self, topic):
        """The JSON documents received on ``topic`` (they must all parse)."""
        return [json.loads(payload.decode("utf-8")) for t, payload in self.received() if t == topic]

    def wait_for(self, predicate, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.received()):
                return True
            time.sleep(0.05)
        return False

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()
