"""Signals a long-running command obeys: SIGINT/SIGTERM finish the current frame and stop."""
import logging
import signal

log = logging.getLogger(__name__)


class Stopper(object):
    """SIGINT/SIGTERM set a flag the main loop checks; a second signal stops at once."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    def install(self):
        """Take over SIGINT and SIGTERM (main thread only)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:
            # Asked twice: the user means it. finally-blocks still close what they can.
            raise KeyboardInterrupt
        self.signal = signum
        log.info("%s received: finishing the current frame and closing outputs",
                 signal.Signals(signum).name)

    def is_set(self):
        """True once a stop was requested."""
        return self.signal is not None

    def restore(self):
        """Give the signals back to their previous handlers."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
