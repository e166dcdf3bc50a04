"""Process and device statistics for ``edge-bench``: CPU use, peak memory, Jetson GPU/power/temp.

CPU use comes from ``os.times`` (process user + system time over wall time, GStreamer's
threads included) and peak memory from ``resource.getrusage`` (``ru_maxrss``): both in
the standard library, since psutil may be absent on the device. On a Jetson, GPU load,
power and temperatures come from jetson-stats (``jtop``, AGPL-3.0, an optional extra),
imported only when asked for and sampled in a background thread.
"""
import logging
import os
import resource
import sys
import threading
import time

log = logging.getLogger(__name__)


class CpuClock(object):
    """CPU time used by this process between ``start()`` and ``stop()``."""

    def __init__(self):
        self._t0 = self._wall0 = None
        self.result = None

    def start(self):
        """Begin measuring."""
        times = os.times()
        self._t0, self._wall0 = times[0] + times[1], time.perf_counter()
        return self

    def stop(self):
        """{cpu_seconds, wall_seconds, cpu_percent (100 = one core busy), cores}."""
        times = os.times()
        cpu = times[0] + times[1] - self._t0
        wall = max(time.perf_counter() - self._wall0, 1e-9)
        self.result = {"cpu_seconds": round(cpu, 3), "wall_seconds": round(wall, 3),
                       "cpu_percent": round(100.0 * cpu / wall, 1), "cores": os.cpu_count()}
        return self.result


def peak_rss_mb():
    """Peak resident memory of this process so far, in MiB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0), 1)


def is_jetson():
    """True on an NVIDIA Jetson (L4T's release file or the device tree says so)."""
    if os.path.exists("/etc/nv_tegra_release"):
        return True
    try:
        with open("/proc/device-tree/model") as stream:
            return "jetson" in stream.read().lower()
    except (IOError, OSError):
        return False


class JetsonStats(object):
    """GPU load, power and temperatures sampled through jtop while a run goes on.

    ``start()`` returns self whether or not jtop is there; ``stop()`` returns a dict of
    {name: {mean, max}} for every GPU / power / temperature reading jtop gave, or
    {"available": False, "reason": ...}. Readings are matched by name because jtop's keys
    differ between its versions ('GPU', 'Power TOT', 'Temp GPU', ...).
    """
    WANTED = ("gpu", "power", "temp")

    def __init__(self, interval=0.5):
        self.interval = float(interval)
        self._jtop = self._thread = None
        self._stop = threading.Event()
        self._samples = {}
        self.reason = None

    def start(self):
        """Open jtop (lazily imported) and sample in a thread; a no-op without it."""
        if not is_jetson():
            self.reason = "not a Jetson"
            return self
        try:
            from jtop import jtop  # AGPL-3.0: the optional 'jetson' extra
        except ImportError:
            self.reason = "jetson-stats not installed (pip install jetson-stats; AGPL-3.0)"
            return self
        try:
            self._jtop = jtop()
            self._jtop.start()
        except Exception as exc:  # noqa: the jtop service may be down; the bench goes on
            self.reason = "jtop could not start: %s" % exc
            self._jtop = None
            return self
        self._thread = threading.Thread(target=self._sample, name="bench-jtop")
        self._thread.daemon = True
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            try:
                stats = dict(self._jtop.stats)
            except Exception:  # noqa: a reading lost is not worth a crash
                stats = {}
            for key, value in stats.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and \
                        any(w in str(key).lower() for w in self.WANTED):
                    self._samples.setdefault(str(key), []).append(float(value))
            self._stop.wait(self.interval)

    def stop(self):
        """Stop sampling; the summary dict (see the class docstring)."""
        if self._jtop is None:
            return {"available": False, "reason": self.reason}
        self._stop.set()
        self._thread.join(2.0)
        try:
            self._jtop.close()
        except Exception:  # noqa
            pass
        out = {"available": True}
        for key, values in sorted(self._samples.items()):
            out[key] = {"mean": round(sum(values) / len(values), 2), "max": round(max(values), 2)}
        return out
