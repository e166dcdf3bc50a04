"""Alert rules: a non-compliant person, and compliance below a ratio over the window.

One event is one message:

- ``non_compliant``: a person settled as ``no_mask`` or ``incorrect`` raises an alert at
  once. Within ``hold_off`` seconds of it, further non-compliant people do not each raise
  one: they are gathered, and one alert names them all when the hold-off ends (a group
  walking in unmasked is one event).
- ``min_compliance``: the window's compliance falls below the ratio with at least
  ``min_people`` people in the window. It fires on the way down, then stays quiet until
  the ratio is back at or above the threshold (re-armed), and never fires twice within
  ``hold_off`` seconds (a ratio that hovers around the threshold is one event).
"""
import collections

from edge.ops.people import iso_time


class AlertRules(object):
    """The configured rules; ``person`` and ``tick`` return the alerts (dicts) they fire."""

    def __init__(self, non_compliant=True, min_compliance=None, min_people=5, hold_off=60.0):
        self.non_compliant, self.min_compliance = bool(non_compliant), min_compliance
        self.min_people, self.hold_off = int(min_people), float(hold_off)
        self.fired = collections.OrderedDict([("non_compliant", 0), ("min_compliance", 0)])
        self._person_last = None     # time the person rule last fired
        self._held = []              # non-compliant people waiting for the hold-off to end
        self._ratio_last = None      # time the ratio rule last fired
        self._ratio_armed = True

    def person(self, person, now, window=None):
        """A person was counted: the alerts this fires (none, or one)."""
        if not self.non_compliant or person.compliant:
            return []
        if self._person_last is not None and now - self._person_last < self.hold_off:
            self._held.append(person)
            return []
        return [self._person_alert([person], now, window)]

    def tick(self, now, window=None, final=False):
        """Time passed (``window``: the people summary's window counts): alerts now due.
        ``final``: the run ends, people held back by the hold-off are announced now."""
        alerts = []
        if self._held and (final or now - self._person_last >= self.hold_off):
            held, self._held = self._held, []
            alerts.append(self._person_alert(held, now, window))
        if self.min_compliance is not None and window is not None:
            ratio, total = window["compliance"], window["total"]
            if ratio is not None and ratio >= self.min_compliance:
                self._ratio_armed = True
            elif ratio is not None and total >= self.min_people and self._ratio_armed and \
                    (self._ratio_last is None or now - self._ratio_last >= self.hold_off):
                self._ratio_armed, self._ratio_last = False, now
                self.fired["min_compliance"] += 1
                alerts.append(collections.OrderedDict([
                    ("time", iso_time(now)), ("rule", "min_compliance"),
                    ("text", "compliance %d%% of the last %d people is below %d%%" % (
                        round(100 * ratio), total, round(100 * self.min_compliance))),
                    ("compliance", ratio), ("threshold", self.min_compliance),
                    ("people", total), ("counts", dict(window["people"]))]))
        return alerts

    def _person_alert(self, people, now, window):
        self._person_last = now
        self.fired["non_compliant"] += 1
        labels = collections.Counter(p.label for p in people)
        text = ", ".join("%d %s" % (n, label) for label, n in sorted(labels.items()))
        alert = collections.OrderedDict([
            ("time", iso_time(now)), ("rule", "non_compliant"),
            ("text", "non-compliant: " + text), ("people", len(people)),
            ("tracks", [p.track for p in people]), ("labels", dict(labels))])
        if window is not None:
            alert["compliance"] = window["compliance"]
        return alert
