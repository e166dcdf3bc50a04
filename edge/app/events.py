"""What the service saw: one JSON line per processed frame, and (opt-in) face crops.

A line looks like::

    {"time": "2026-11-28T06:00:00.123Z", "run": "20261128T055912Z-3fa2c1", "frame": 12,
     "faces": [{"track": 3, "box": [412, 220, 450, 266], "label": "mask", "score": 0.97}],
     "counts": {"mask": 1, "no_mask": 0, "incorrect": 0}}

``time`` is ISO 8601 UTC; ``run`` names the process that wrote the line (a start time and
six random hex digits: a Nano without a clock battery may start in the past); ``frame`` is
the input's frame number; ``box`` is xyxy in pixels of the input frame; ``counts`` has
every label, zero included, so consumers need no defaults. No face image is written
unless ``save_faces`` is on (the owner's decision, not the default).

The file survives restarts and power cuts: it is opened for appending; a last line cut
short by a power cut (or trailing NUL bytes, what some file systems leave) is removed at
start and logged; the service rotates it itself by size (``events.000042.jsonl``, gzip'd
in the background, the oldest beyond ``keep`` deleted: never a copy-and-truncate, which
loses lines and leaves NUL bytes); track ids continue across restarts from a small state
file beside it (``events.state.json``), reserved in blocks so that a crash can skip ids but
never reuse one.
"""
import datetime
import gzip
import io
import json
import logging
import os
import re
import shutil
import sys
import threading
import time

import cv2

from edge.common import atomic_write
from edge.infer.faces import count_labels

log = logging.getLogger(__name__)

# Track ids reserved per write of the state file: a crash skips at most this many.
ID_BLOCK = 1000
# How much of the file's end the start-up repair and the track-id recovery read.
TAIL_BYTES = 1 << 20


def utc_now():
    """The current time as ISO 8601 UTC with milliseconds and a Z."""
    now = datetime.datetime.utcnow()
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (now.microsecond // 1000)


def new_run_id():
    """A run id: the UTC start time and six random hex digits (unique even when the clock is not)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + os.urandom(3).hex()


def state_path(path):
    """The track-id state file beside an events file: events.jsonl -> events.state.json."""
    return os.path.splitext(path)[0] + ".state.json"


def rotated_files(path):
    """[(sequence, path)] of the rotated files of ``path``, oldest first (.gz or not)."""
    folder = os.path.dirname(os.path.abspath(path))
    stem, ext = os.path.splitext(os.path.basename(path))
    pattern = re.compile(r"^%s\.(\d{6,})%s(\.gz)?$" % (re.escape(stem), re.escape(ext)))
    found = []
    for name in os.listdir(folder) if os.path.isdir(folder) else ():
        match = pattern.match(name)
        if match:
            found.append((int(match.group(1)), os.path.join(folder, name)))
    return sorted(found)


def repair_tail(path):
    """Cut a partial last line (a power cut mid-write) and trailing NUL bytes off ``path``.

    Returns the number of bytes removed (0: the file ended in a complete line).
    """
    size = os.path.getsize(path)
    with open(path, "rb+") as f:
        end = size
        while end > 0:  # back to the last newline, through NULs and a cut-off line
            start = max(0, end - TAIL_BYTES)
            f.seek(start)
            chunk = f.read(end - start)
            if chunk.endswith(b"\n"):
                break
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        if end < size:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
    return size - end


def max_track_id(path):
    """The largest track id in the last ``TAIL_BYTES`` of an events file (.gz: all of it), or 0."""
    found = 0
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            with open(path, "rb") as f:
                f.seek(max(0, os.path.getsize(path) - TAIL_BYTES))
                data = f.read()
    except (OSError, EOFError) as exc:
        log.warning("cannot read %s for its track ids: %s", path, exc)
        return 0
    for match in re.finditer(rb'"track":\s*(\d+)', data):
        found = max(found, int(match.group(1)))
    return found


class TrackIds(object):
    """Track ids unique across runs: ``ids()`` returns the next one.

    ``state``: the JSON file that remembers the next free id (None: ids from 1, in memory
    only). Ids are reserved ``ID_BLOCK`` at a time (one small atomic write per block), so a
    killed process skips ids but never hands one out twice; a clean ``close`` records the
    exact next id. ``at_least``: never start below this id (a reload onto another file).
    ``recover``: events files to take the largest id from when the state file is missing.
    """

    def __init__(self, state=None, at_least=1, recover=()):
        self.state = state
        self.next = max(1, int(at_least))
        self._reserved = self.next
        self._write_failed = False
        if state is None:
            return
        saved = self._read()
        if saved is None:
            saved = 1 + max([0] + [max_track_id(p) for p in recover if os.path.isfile(p)])
            if saved > 1:
                log.info("track-id state %s missing: continuing after id %d found in the events",
                         state, saved - 1)
        self.next = max(self.next, saved)
        self._reserve()

    def _read(self):
        try:
            with open(self.state) as f:
                return int(json.load(f)["next_track"])
        except (OSError, IOError):
            return None
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("track-id state %s is unreadable (%s): recovering from the events", self.state, exc)
            return None

    def _write(self, value):
        try:
            atomic_write(self.state, json.dumps({"next_track": int(value), "updated": utc_now()}) + "\n",
                         durable=True)
            self._write_failed = False
        except OSError as exc:
            if not self._write_failed:  # a full disk: say it once, ids stay unique in this run
                log.error("cannot write track-id state %s: %s", self.state, exc)
                self._write_failed = True

    def _reserve(self):
        self._reserved = self.next + ID_BLOCK
        self._write(self._reserved)

    def __call__(self):
        if self.state is not None and self.next >= self._reserved:
            self._reserve()
        value = self.next
        self.next += 1
        return value

    def close(self):
        """Record the exact next id (the unused rest of the block is given back)."""
        if self.state is not None:
            self._write(self.next)
            self.state = None


def track_ids_for(path, at_least=1):
    """The ``TrackIds`` of an events file: its state file, recovered from its newest lines when
    that is missing; in memory for None and '-'."""
    if not path or path == "-":
        return TrackIds(at_least=at_least)
    return TrackIds(state_path(path), at_least=at_least,
                    recover=[path] + [p for _, p in rotated_files(path)[-1:]])


class EventWriter(object):
    """Appends one JSON line per frame to ``path`` ('-' = stdout); see the module docstring.

    flush_every: lines between flushes (1: every line reaches the kernel at once, so a
    killed process loses none; the disk write is still the kernel's). max_bytes: rotate
    before a line would make the file larger (0: never). keep: rotated files kept.
    compress: gzip rotated files in a background thread. run_id: written on every line.
    track_ids: a ``TrackIds`` to hand over (a reload onto the same file), else the file's
    own (``track_ids_for``), starting at ``at_least`` or above.
    """

    def __init__(self, path, flush_every=1, max_bytes=0, keep=10, compress=True, run_id=None,
                 track_ids=None, at_least=1):
        self.path, self.flush_every = path, max(1, int(flush_every))
        self.max_bytes, self.keep, self.compress = int(max_bytes), max(1, int(keep)), compress
        self.run_id = run_id or new_run_id()
        self.lines = 0        # lines written by this writer
        self.rotations = 0
        self._compressor = None
        self._stream = None
        if path == "-":
            self._stream, self._owned, self._size = sys.stdout, False, 0
            self.track_ids = track_ids or TrackIds(at_least=at_least)
            return
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            os.makedirs(folder)
        if os.path.isfile(path):
            cut = repair_tail(path)
            if cut:
                log.warning("events file %s ended in a partial line (%d bytes, a power cut?): removed",
                            path, cut)
        self.track_ids = track_ids or track_ids_for(path, at_least)
        self._open()
        self._tidy()

    def _open(self):
        # Line-oriented text; an explicit encoding because the locale may be C on a device.
        self._stream, self._owned = io.open(self.path, "a", encoding="utf-8"), True
        self._size = self._stream.tell()

    def write(self, frame, faces, extra=None):
        """Append the record of ``frame`` (int) with its classified ``faces``."""
        labelled = [f for f in faces if f.label is not None]
        record = {"time": utc_now(), "run": self.run_id, "frame": int(frame),
                  "faces": [f.to_dict() for f in labelled], "counts": count_labels(labelled)}
        if extra:
            record.update(extra)
        line = json.dumps(record, separators=(",", ":")) + "\n"
        size = len(line.encode("utf-8"))
        if self._owned and self.max_bytes and self._size and self._size + size > self.max_bytes:
            self.rotate()
        self._stream.write(line)
        self._size += size
        self.lines += 1
        if self.lines % self.flush_every == 0:
            self._stream.flush()

    def rotate(self):
        """Move the current file aside as the next numbered file and start a new one."""
        if not self._owned or self._stream is None:
            return None
        self._stream.flush()
        self._stream.close()
        try:
            with open(self.path, "rb") as f:
                os.fsync(f.fileno())  # once per rotation: the rotated file is complete on disk
            existing = rotated_files(self.path)
            stem, ext = os.path.splitext(self.path)
            target = "%s.%06d%s" % (stem, (existing[-1][0] + 1) if existing else 1, ext)
            os.rename(self.path, target)
        except OSError as exc:  # the lines stay where they are; no retry on every line
            log.error("cannot rotate events file %s (%s): it grows on; rotation is off until the "
                      "service restarts", self.path, exc)
            self.max_bytes = 0
            self._open()
            return None
        self.rotations += 1
        self._open()
        log.info("events file rotated to %s", target)
        self._tidy()
        return target

    def _tidy(self):
        """Delete rotated files beyond ``keep`` and gzip the others in the background."""
        self._wait_compressor()
        files = rotated_files(self.path)
        for _, old in files[:-self.keep]:
            try:
                os.remove(old)
            except OSError as exc:
                log.warning("cannot delete old events file %s: %s", old, exc)
        for _, kept in files[-self.keep:]:
            if os.path.exists(kept + ".gz.tmp"):
                os.remove(kept + ".gz.tmp")  # a compression cut short by a crash: done again
        plain = [p for _, p in files[-self.keep:] if not p.endswith(".gz")]
        if self.compress and plain:
            self._compressor = threading.Thread(target=compress_files, args=(plain,),
                                                name="events-gzip")
            self._compressor.daemon = True
            self._compressor.start()

    def _wait_compressor(self, timeout=None):
        if self._compressor is not None:
            self._compressor.join(timeout)
            if self._compressor.is_alive():
                log.info("events compression still running at exit: it is finished at the next start")
            self._compressor = None

    def flush(self):
        """Push buffered lines to the file."""
        if self._stream is not None:
            self._stream.flush()

    def reopen(self):
        """Flush, close and open the file again (after an outside rotation; a reload)."""
        if self._owned and self._stream is not None:
            self._stream.flush()
            self._stream.close()
            self._open()

    def close(self, keep_ids=False):
        """Flush and close the file (stdout is only flushed), let compression finish, save
        the next track id (unless ``keep_ids``: the ids go on with another writer)."""
        if self._stream is None:
            return
        self._stream.flush()
        if self._owned:
            self._stream.close()
        self._stream = None
        self._wait_compressor(timeout=10.0)  # within systemd's TimeoutStopSec on a Nano
        if not keep_ids:
            self.track_ids.close()


def compress_files(paths):
    """gzip each file to ``FILE.gz`` (through ``FILE.gz.tmp`` and a rename), then delete it."""
    for path in paths:
        tmp = path + ".gz.tmp"
        try:
            with open(path, "rb") as src, gzip.open(tmp, "wb", compresslevel=6) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(tmp, path + ".gz")
            os.remove(path)
        except OSError as exc:  # a full disk: the plain file stays, nothing is lost
            log.warning("cannot compress %s: %s", path, exc)
            if os.path.exists(tmp):
                os.remove(tmp)


class FaceSaver(object):
    """Stores a crop of a face each time it is classified (only when the owner turns it on)."""

    def __init__(self, folder):
        self.folder = folder
        if not os.path.isdir(folder):
            os.makedirs(folder)
        self.saved = 0

    def save(self, image, face, frame):
        """Write ``face``'s crop from ``image`` as <frame>_<track>_<label>.jpg."""
        h, w = image.shape[:2]
        x1, y1, x2, y2 = [int(round(float(v))) for v in face.box]
        x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
        if x2 <= x1 or y2 <= y1:
            return None
        name = "%06d_%s_%s.jpg" % (frame, face.track if face.track is not None else "x", face.label)
        path = os.path.join(self.folder, name)
        if cv2.imwrite(path, image[y1:y2, x1:x2]):
            self.saved += 1
            return path
        log.warning("could not write face crop %s", path)
        return None
