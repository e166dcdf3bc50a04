"""Signals a long-running command obeys: SIGINT/SIGTERM finish the current frame and stop;
SIGHUP (``systemctl reload``) asks for the configuration file to be read again."""
import logging
import signal

log = logging.getLogger(__name__)


class Stopper(object):
    """SIGINT/SIGTERM set a flag the main loop checks; a second one stops at once.

    With ``reload=True`` SIGHUP sets another flag (``reload_requested``), which the loop
    takes with ``take_reload`` between frames; without it SIGHUP keeps its handler (a
    command that cannot reload is not told it can). ``interrupted()`` is what a loop
    watches: a stop or a reload waiting.
    """

    def __init__(self, reload=False):
        self.signal = None
        self.reload_requested = False
        self._reload = reload
        self._previous = {}

    def install(self):
        """Take over SIGINT and SIGTERM (and SIGHUP with ``reload``); main thread only."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        if self._reload:
            self._previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._handle_hup)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:
            # Asked twice: the user means it. finally-blocks still close what they can.
            raise KeyboardInterrupt
        self.signal = signum
        log.info("%s received: finishing the current frame and closing outputs",
                 signal.Signals(signum).name)

    def _handle_hup(self, signum, frame):
        # Only a flag: the reload runs in the main loop between frames, never in a handler.
        self.reload_requested = True
        log.info("SIGHUP received: reloading the configuration after the current frame")

    def is_set(self):
        """True once a stop was requested."""
        return self.signal is not None

    def interrupted(self):
        """True when the loop should return: a stop, or a reload waiting."""
        return self.signal is not None or self.reload_requested

    def take_reload(self):
        """True (once per SIGHUP, however many came) when a reload is waiting and no stop."""
        if self.reload_requested and self.signal is None:
            self.reload_requested = False
            return True
        return False

    def restore(self):
        """Give the signals back to their previous handlers."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
