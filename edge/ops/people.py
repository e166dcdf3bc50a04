"""People, not faces per frame: a person is a track from its first sight to its end.

A track becomes a person when the detector has matched it ``min_detections`` times (one
stray detection is not a person) and it has been classified. Its label settles by the
tracker's vote (``Track.label``, the mean of its last classifications): as soon as it has
``settle_votes`` classifications while in view, or else when the track ends with the
votes it has. Each person is counted once, at that moment, with that label: a label that
changes later does not count the person again. A track that ends (the tracker dropped it,
or a scene cut reset the tracker) is noticed as its id leaving ``Tracker.all``.

Counts are kept per label over the run and over a sliding window of ``window`` seconds
(of the clock the caller passes: wall time in the service) by the time each person was
counted. ``incorrect`` is
non-compliant, like ``no_mask`` (``edge.infer.faces.is_compliant``).
"""
import collections
import datetime

from edge.infer.faces import compliance, is_compliant
from edge.infer.model_meta import CLASS_NAMES


def iso_time(seconds):
    """Epoch seconds as ISO 8601 UTC with milliseconds and a Z (as the events file writes)."""
    when = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (when.microsecond // 1000)


class Person(object):
    """One counted person: its track id, settled label and score, and when it was seen."""

    __slots__ = ("track", "label", "score", "first_seen", "last_seen", "first_frame",
                 "last_frame", "detections", "votes", "box", "ended")

    def __init__(self, track, label, score, first_seen, last_seen, first_frame=None,
                 last_frame=None, detections=0, votes=0, box=None, ended=False):
        self.track, self.label, self.score = track, label, float(score)
        self.first_seen, self.last_seen = first_seen, last_seen
        self.first_frame, self.last_frame = first_frame, last_frame
        self.detections, self.votes, self.box, self.ended = detections, votes, box, ended

    @property
    def compliant(self):
        return is_compliant(self.label)

    def to_dict(self):
        """The person as it leaves the device (MQTT, the page): labels and times, no image, no box."""
        return collections.OrderedDict([
            ("track", self.track), ("label", self.label), ("compliant", self.compliant),
            ("score", round(self.score, 3)), ("first_seen", iso_time(self.first_seen)),
            ("last_seen", iso_time(self.last_seen)),
            ("seconds", round(self.last_seen - self.first_seen, 2)), ("votes", self.votes)])

    def __repr__(self):
        return "<Person #%s %s %.2f>" % (self.track, self.label, self.score)


class _Seen(object):
    """What the counter remembers of a live track."""

    __slots__ = ("track", "first", "first_frame", "last", "last_frame", "counted")

    def __init__(self, track, now, frame):
        self.track, self.first, self.first_frame = track, now, frame
        self.last, self.last_frame, self.counted = now, frame, False


class PeopleCounter(object):
    """Turns the tracker's tracks into people, counted once each (see the module docstring).

    min_detections: detector matches before a track can be a person; settle_votes:
    classifications that settle a label while the person is in view; window: seconds of
    the sliding window; keep: recent persons remembered for the page.
    """

    def __init__(self, min_detections=2, settle_votes=3, window=300.0, keep=20):
        self.min_detections, self.settle_votes = int(min_detections), int(settle_votes)
        self.window = float(window)
        self.totals = collections.OrderedDict((name, 0) for name in CLASS_NAMES)
        self.in_window = collections.OrderedDict((name, 0) for name in CLASS_NAMES)
        self.recent = collections.deque(maxlen=keep)
        self.discarded = 0        # tracks that ended without becoming a person
        self._live = {}           # track id -> _Seen
        self._window = collections.deque()  # (settle time, label), oldest first

    def observe(self, tracks, now, frame=None):
        """Take the tracker's live tracks (``Tracker.all``) at time ``now``; returns the
        persons settled by this call (new ones in view, and those whose track ended)."""
        settled, ids = [], set()
        for track in tracks:
            ids.add(track.id)
            seen = self._live.get(track.id)
            if seen is None:
                seen = self._live[track.id] = _Seen(track, now, frame)
            elif track.missed == 0:  # matched at the detector's last run: in view
                seen.last, seen.last_frame = now, frame
            if not seen.counted and track.hits >= self.min_detections \
                    and track.classified >= self.settle_votes:
                settled.append(self._count(seen, now, ended=False))
        for gone in [i for i in self._live if i not in ids]:
            person = self._end(self._live.pop(gone), now)
            if person is not None:
                settled.append(person)
        self._expire(now)
        return settled

    def finish(self, now=None):
        """End every live track (the run is over); returns the persons this settles."""
        settled = [p for p in (self._end(seen, now) for seen in self._live.values()) if p is not None]
        self._live = {}
        if now is not None:
            self._expire(now)
        return settled

    def _end(self, seen, now):
        track = seen.track
        if seen.counted:
            return None
        if track.hits >= self.min_detections and track.classified > 0 and track.label is not None:
            return self._count(seen, seen.last if now is None else now, ended=True)
        self.discarded += 1
        return None

    def _count(self, seen, now, ended):
        track = seen.track
        seen.counted = True
        person = Person(track.id, track.label, track.score, seen.first, seen.last,
                        seen.first_frame, seen.last_frame, track.hits, track.classified,
                        [float(v) for v in track.box], ended)
        if person.label not in self.totals:  # a model with other class names
            self.totals[person.label] = self.in_window[person.label] = 0
        self.totals[person.label] += 1
        self.in_window[person.label] += 1
        self._window.append((now, person.label))  # counted at: keeps the deque in order
        self.recent.append(person)
        return person

    def _expire(self, now):
        while self._window and self._window[0][0] < now - self.window:
            self.in_window[self._window.popleft()[1]] -= 1

    @property
    def live(self):
        """Tracks seen and not yet ended."""
        return len(self._live)

    def summary(self, now=None):
        """Counts over the run and over the window: per label, compliant, non-compliant, ratio."""
        if now is not None:
            self._expire(now)
        return collections.OrderedDict([("run", _counts(self.totals)),
                                        ("window", _counts(self.in_window)),
                                        ("window_seconds", self.window)])


def _counts(per_label):
    counts = collections.OrderedDict(per_label)
    compliant = sum(n for label, n in counts.items() if is_compliant(label))
    ratio = compliance(counts)
    return collections.OrderedDict([
        ("people", counts), ("total", sum(counts.values())), ("compliant", compliant),
        ("non_compliant", sum(counts.values()) - compliant),
        ("compliance", None if ratio is None else round(ratio, 4))])
