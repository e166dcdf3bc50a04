"""systemd's sd_notify protocol in the standard library (Python 3.6).

The unit runs the service with ``Type=notify`` and ``WatchdogSec=``: systemd waits for
READY=1 before it calls the service started (after the first-boot TensorRT engine build),
and restarts it when the main loop stops sending WATCHDOG=1. Off systemd (no
``$NOTIFY_SOCKET``) every call is a silent no-op, so the same code runs in a terminal,
in Docker and in the tests.

Usage in the main loop::

    notify.ready()
    beat = notify.Heartbeat()      # pings at half of $WATCHDOG_USEC, or never
    while running:
        ...process a frame...
        beat.beat()
    notify.stopping()
"""
import logging
import os
import socket
import time

log = logging.getLogger(__name__)


def _address():
    """The notify socket's address from $NOTIFY_SOCKET, or None when not under systemd."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return None
    if path.startswith("@"):
        # An abstract socket: its name starts with a NUL byte instead of the '@'.
        return "\0" + path[1:]
    if not path.startswith("/"):
        log.warning("ignoring NOTIFY_SOCKET=%r: neither a path nor an abstract name", path)
        return None
    return path


def notify(message):
    """Send one sd_notify datagram (e.g. "READY=1"); returns True when it was sent.

    Never raises: a service must not die because systemd's socket went away.
    """
    address = _address()
    if address is None:
        return False
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    # Never block the main loop on a full datagram queue (nobody reading the socket).
    sock.setblocking(False)
    try:
        sock.connect(address)
        sock.sendall(message.encode("utf-8"))
        return True
    except OSError as exc:
        log.warning("sd_notify %r to %s failed: %s", message.split("=")[0],
                    os.environ.get("NOTIFY_SOCKET"), exc)
        return False
    finally:
        sock.close()


def ready(status=None):
    """Tell systemd that start-up is complete (models loaded, engine built, source open)."""
    message = "READY=1\nMAINPID=%d" % os.getpid()
    if status:
        message += "\nSTATUS=" + _one_line(status)
    return notify(message)


def watchdog():
    """Tell systemd the main loop is alive (send at least every WatchdogSec/2)."""
    return notify("WATCHDOG=1")


def stopping(status=None):
    """Tell systemd the service is shutting down (flushing outputs)."""
    message = "STOPPING=1"
    if status:
        message += "\nSTATUS=" + _one_line(status)
    return notify(message)


def status(text):
    """Set the one-line status shown by ``systemctl status``."""
    return notify("STATUS=" + _one_line(text))


def _one_line(text):
    # The protocol is newline-separated KEY=VALUE pairs: a newline would start a new key.
    return " ".join(str(text).split())


def watchdog_interval():
    """Seconds between watchdog pings (half of $WATCHDOG_USEC), or None without a watchdog.

    $WATCHDOG_PID, when set, names the process the watchdog is meant for: a child
    process that inherited the environment must not ping on its parent's behalf.
    """
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        usec = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not an integer", usec)
        return None
    if usec <= 0:
        return None
    return usec / 2e6


class Heartbeat(object):
    """Rate-limited watchdog pings for a main loop: call ``beat()`` once per iteration.

    Pings happen only from the loop itself (never from a helper thread), so a hung loop
    stops pinging and systemd restarts the service.
    """

    def __init__(self, interval=None, clock=time.monotonic):
        """interval: seconds between pings (default: watchdog_interval(), None = never)."""
        self.interval = watchdog_interval() if interval is None else interval
        self._clock = clock
        self._last = None
        self.sent = 0

    def beat(self):
        """Ping when the interval has passed since the last ping; returns True if pinged."""
        if not self.interval:
            return False
        now = self._clock()
        if self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        if watchdog():
            self.sent += 1
        return True
