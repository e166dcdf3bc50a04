"""The service's settings: defaults from ``default_config.yaml``, a user file, then flags.

``SCHEMA`` lists every setting once: its dotted key, type, accepted values and
command-line flag. The defaults themselves live only in ``default_config.yaml`` (the
documented copy a user starts from); a test pins the two to the same keys.
"""
import argparse
import copy
import os

import yaml

from edge.errors import ConfigError
from edge.infer import detect

DEFAULT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_config.yaml")

DETECTORS = tuple(detect.DETECTORS)  # one registry: a new detector is a choice here at once
BACKENDS = ("auto", "trt", "ort")
LOG_LEVELS = ("debug", "info", "warning", "error")


class Setting(object):
    """One setting: ``kind`` is str, int, float, bool or list; ``nullable`` allows null."""

    def __init__(self, key, kind, flag, help, choices=None, minimum=None, maximum=None,
                 nullable=False):
        self.key, self.kind, self.flag, self.help = key, kind, flag, help
        self.choices, self.minimum, self.maximum = choices, minimum, maximum
        self.nullable = nullable

    def accepted(self):
        """Words describing the accepted values, for error messages and --help."""
        if self.choices:
            text = "one of " + ", ".join(self.choices)
        elif self.kind in ("int", "float"):
            low = "-inf" if self.minimum is None else self.minimum
            high = "inf" if self.maximum is None else self.maximum
            text = "%s in [%s, %s]" % ("an integer" if self.kind == "int" else "a number", low, high)
        elif self.kind == "bool":
            text = "true or false"
        elif self.kind == "list":
            text = "a list of strings"
        else:
            text = "a string"
        return text + (" or null" if self.nullable else "")

    def check(self, value, source):
        """Return ``value`` converted to this setting's type, or raise ConfigError."""
        if value is None:
            if self.nullable:
                return None
            raise self.error(value, source)
        if self.kind == "list":
            value = [value] if isinstance(value, str) else value
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise self.error(value, source)
            return list(value)
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise self.error(value, source)
            return value
        if self.kind in ("int", "float"):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if self.kind == "int" and ok and value != int(value):
                ok = False
            if not ok:
                raise self.error(value, source)
            value = int(value) if self.kind == "int" else float(value)
            if (self.minimum is not None and value < self.minimum) or \
                    (self.maximum is not None and value > self.maximum):
                raise self.error(value, source)
            return value
        if not isinstance(value, str) or (self.choices and value not in self.choices):
            raise self.error(value, source)
        return value

    def error(self, value, source):
        """A ConfigError naming the key, the bad value, where it came from and what is accepted."""
        return ConfigError("%s: setting %r = %r is not accepted; accepted: %s"
                           % (source, self.key, value, self.accepted()))


S = Setting
SCHEMA = [
    S("input", "str", None, "input URI or path", nullable=True),
    S("outputs", "list", None, "output URIs"),
    S("headless", "bool", "--headless", "never open a display"),
    S("photo", "bool", "--photo", "still-photo mode (images in, annotated images + JSON out)"),
    S("max_frames", "int", "--max-frames", "stop after N frames (0: no limit)", minimum=0),
    S("baseline", "bool", "--baseline", "classify every face on every frame, one at a time"),
    S("output.fps", "float", "--output-fps", "frame rate of video outputs", minimum=0.1,
      nullable=True),
    S("output.bitrate", "int", "--bitrate", "H.264 bit rate (kbit/s)", minimum=100),
    S("output.quality", "int", "--quality", "MJPEG quality", minimum=1, maximum=100),
    S("output.http_token", "str", "--http-token", "token of http:// (MJPEG) outputs", nullable=True),
    S("output.rtsp_user", "str", "--rtsp-user", "login name of rtsp:// outputs"),
    S("output.rtsp_password", "str", "--rtsp-password", "password of rtsp:// outputs",
      nullable=True),
    S("source.width", "int", "--width", "camera width", minimum=1, nullable=True),
    S("source.height", "int", "--height", "camera height", minimum=1, nullable=True),
    S("source.fps", "float", "--fps", "camera frame rate", minimum=0.1, nullable=True),
    S("source.flip_method", "int", "--flip-method", "CSI flip method", minimum=0, maximum=7),
    S("source.format", "str", "--format", "USB camera stream", choices=("auto", "raw", "mjpeg")),
    S("source.latency", "int", "--latency", "RTSP latency (ms)", minimum=0),
    S("source.protocols", "str", "--protocols", "RTSP transport", choices=("tcp", "udp")),
    S("source.reconnect", "bool", "--reconnect", "reopen a dropped live source"),
    S("source.backoff", "float", "--backoff", "first reopen wait (s)", minimum=0.0),
    S("source.backoff_max", "float", "--backoff-max", "longest reopen wait (s)", minimum=0.0),
    S("source.open_timeout", "float", "--open-timeout", "source start timeout (s)",
      minimum=0.1),
    S("source.stall_timeout", "float", "--stall-timeout", "live stall timeout (s)",
      minimum=0.1),
    S("source.retry_open", "bool", "--retry-open", "wait for a camera absent at start"),
    S("source.loop", "bool", "--loop", "replay a video file at its end"),
    S("detector.name", "str", "--detector", "face detector", choices=DETECTORS),
    S("detector.confidence", "float", "--confidence",
      "minimum face confidence (null: the detector file's operating point, else 0.3)",
      minimum=0.0, maximum=1.0, nullable=True),
    S("detector.min_size", "int", "--min-size", "smallest face (px)", minimum=0),
    S("detector.input_size", "int", "--detector-size", "detector input long side (px)",
      minimum=32, nullable=True),
    S("detector.max_upscale", "float", "--detector-max-upscale",
      "most a small frame is enlarged for the detector (null: the detector's own, 4 for retinaface)",
      minimum=1.0, nullable=True),
    S("detector.close_up_pass", "bool", "--close-up-pass",
      "look again at half the scale for a face too large to be found whole (retinaface)"),
    S("detector.flip_pass", "bool", "--flip-pass",
      "also look at each frame's mirror image (null: still photos only)", nullable=True),
    S("detector.nms_iou", "float", "--nms-iou", "NMS IoU", minimum=0.0, maximum=1.0),
    S("detector.every", "int", "--detect-every", "detect every N frames", minimum=1),
    S("detector.scene_cut", "float", "--scene-cut", "picture change that forces a detection",
      minimum=0.0, maximum=255.0),
    S("detector.models_dir", "str", "--models-dir", "detector files folder", nullable=True),
    S("detector.model", "str", "--detector-model", "fine-tuned retinaface ONNX", nullable=True),
    S("detector.backend", "str", "--detector-backend", "retinaface inference backend", choices=BACKENDS),
    S("detector.large_anchor_floor", "float", "--large-anchor-floor",
      "retinaface: lowest score at its 512 px anchors (null: the file's; 0: none)",
      minimum=0.0, maximum=1.0, nullable=True),
    S("classifier.model", "str", "--model", "classifier ONNX model"),
    S("classifier.backend", "str", "--backend", "inference backend", choices=BACKENDS),
    S("classifier.max_batch", "int", "--max-batch", "largest batch", minimum=1, nullable=True),
    S("classifier.every", "int", "--classify-every", "re-classify a face every N frames",
      minimum=1),
    S("classifier.engine_cache", "str", "--engine-cache", "TensorRT engine cache folder",
      nullable=True),
    S("classifier.non_compliant_threshold", "float", "--non-compliant-threshold",
      "call a face non-compliant once 1 - P(mask) reaches this (null: its top class)",
      minimum=0.0, maximum=1.0, nullable=True),
    S("tracker.iou", "float", "--track-iou", "track matching IoU", minimum=0.0, maximum=1.0),
    S("tracker.max_missed", "int", "--max-missed", "detector runs a track survives unmatched",
      minimum=0),
    S("tracker.min_hits", "int", "--min-hits", "detections before a track is shown", minimum=1),
    S("tracker.vote", "int", "--vote", "classifications averaged per face", minimum=1),
    S("overlay.enabled", "bool", "--overlay", "draw boxes, labels and the HUD"),
    S("overlay.blur_faces", "bool", "--blur-faces", "pixelate every face in the output"),
    S("events.path", "str", "--events", "events JSON-lines file, '-' for stdout", nullable=True),
    S("events.flush_every", "int", "--events-flush-every", "flush events every N frames",
      minimum=1),
    S("events.rotate_mb", "float", "--events-rotate-mb", "rotate the events file at this size (MiB)",
      minimum=0.0),
    S("events.keep", "int", "--events-keep", "rotated events files kept", minimum=1),
    S("events.compress", "bool", "--events-compress", "gzip rotated events files"),
    S("events.save_faces", "bool", "--save-faces", "store a crop of each classified face"),
    S("events.faces_dir", "str", "--faces-dir", "folder of saved face crops"),
    S("events.mqtt", "str", "--mqtt", "MQTT broker, mqtt(s)://[USER:PASS@]HOST[:PORT]/PREFIX",
      nullable=True),
    S("events.mqtt_ca", "str", "--mqtt-ca", "CA file that signs an mqtts:// broker", nullable=True),
    S("events.mqtt_status_every", "float", "--mqtt-status-every", "seconds between status messages",
      minimum=0.5),
    S("events.mqtt_buffer", "int", "--mqtt-buffer", "messages kept while the broker is away",
      minimum=1),
    S("health.file", "str", "--health-file", "health JSON file", nullable=True),
    S("health.http", "str", "--health-http",
      "HTTP server host:port (/health, /metrics, the page)", nullable=True),
    S("health.token", "str", "--health-token", "token of every HTTP route", nullable=True),
    S("people.min_detections", "int", "--person-min-detections",
      "detector matches before a track counts as a person", minimum=1),
    S("people.settle_votes", "int", "--settle-votes",
      "classifications that settle a person's label while in view", minimum=1),
    S("people.window", "float", "--people-window", "sliding window of people counts (s)",
      minimum=1.0),
    S("alerts.non_compliant", "bool", "--alert-non-compliant", "alert on non-compliant people"),
    S("alerts.min_compliance", "float", "--alert-min-compliance",
      "alert when the window's compliance falls below this", minimum=0.0, maximum=1.0,
      nullable=True),
    S("alerts.min_people", "int", "--alert-min-people",
      "people in the window before min_compliance applies", minimum=1),
    S("alerts.hold_off", "float", "--alert-hold-off", "seconds between two alerts of a rule",
      minimum=0.0),
    S("web.page", "bool", "--web-page", "the live page and its stream on health.http"),
    S("web.stream_fps", "float", "--stream-fps", "frame rate of the page's live view", minimum=0.1),
    S("web.chart_step", "float", "--chart-step", "seconds between compliance chart points",
      minimum=0.1),
    S("clips.dir", "str", "--clips", "folder of clips around non-compliant people", nullable=True),
    S("clips.before", "float", "--clip-before", "seconds kept before the person", minimum=0.0),
    S("clips.after", "float", "--clip-after", "seconds recorded after the person", minimum=0.0),
    S("clips.fps", "float", "--clip-fps", "clip frame rate", minimum=1.0),
    S("clips.width", "int", "--clip-width", "clip width (px)", minimum=32),
    S("clips.max_count", "int", "--clip-max-count", "clips kept (oldest deleted)", minimum=1),
    S("clips.max_mb", "float", "--clip-max-mb", "MiB of clips kept (oldest deleted)",
      minimum=1.0),
    S("log_level", "str", "--log-level", "log level", choices=LOG_LEVELS),
]
del S
BY_KEY = dict((s.key, s) for s in SCHEMA)

# Settings that were renamed or split: an old config gets this message, not "unknown".
RETIRED = {
    "output.token": "output.token had two roles and is now two settings: output.http_token "
                    "(the token of http:// MJPEG outputs) and output.rtsp_password (the password "
                    "of rtsp:// outputs, user output.rtsp_user, default viewer); set the one(s) you "
                    "mean (flags: --http-token, --rtsp-password)",
}


def read_yaml(path):
    """Read a YAML mapping from ``path``; a clear ConfigError when it is missing or invalid."""
    try:
        with open(path) as stream:
            data = yaml.safe_load(stream)
    except (IOError, OSError) as exc:
        raise ConfigError("cannot read config file %s: %s" % (path, exc.strerror or exc))
    except yaml.YAMLError as exc:
        raise ConfigError("config file %s is not valid YAML: %s" % (path, exc))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("config file %s must hold a mapping of settings, not a %s"
                          % (path, type(data).__name__))
    return data


def flatten(tree, source, prefix=""):
    """Nested mapping -> {dotted key: value}, rejecting keys the schema does not know."""
    flat = {}
    for key, value in tree.items():
        dotted = prefix + str(key)
        section = [s.key for s in SCHEMA if s.key.startswith(dotted + ".")]
        if section and isinstance(value, dict):
            flat.update(flatten(value, source, dotted + "."))
        elif dotted in BY_KEY:
            flat[dotted] = value
        elif dotted in RETIRED:
            raise ConfigError("%s: %s" % (source, RETIRED[dotted]))
        elif section:
            raise ConfigError("%s: %r is a section and needs a mapping of: %s"
                              % (source, dotted, ", ".join(k[len(dotted) + 1:] for k in section)))
        else:
            known = sorted(set(s.key[len(prefix):].split(".")[0] for s in SCHEMA
                               if s.key.startswith(prefix)))
            raise ConfigError("%s: unknown setting %r; known %s: %s"
                              % (source, dotted, "keys in " + prefix[:-1] if prefix else "keys",
                                 ", ".join(known)))
    return flat


def nest(flat):
    """{dotted key: value} -> nested dicts (the shape of the YAML file)."""
    tree = {}
    for key, value in flat.items():
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return tree


def defaults():
    """The validated defaults from ``default_config.yaml``, as a nested dict."""
    flat = flatten(read_yaml(DEFAULT_PATH), DEFAULT_PATH)
    missing = [s.key for s in SCHEMA if s.key not in flat]
    if missing:
        raise ConfigError("%s lacks settings %s" % (DEFAULT_PATH, ", ".join(missing)))
    return nest(dict((k, BY_KEY[k].check(v, DEFAULT_PATH)) for k, v in flat.items()))


def merge(config, overrides, source):
    """Return ``config`` (nested) updated by ``overrides`` (nested or dotted), validated."""
    merged = copy.deepcopy(config)
    flat = flatten(nest(overrides) if any("." in str(k) for k in overrides) else overrides, source)
    for key, value in flat.items():
        node = merged
        parts = key.split(".")
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = BY_KEY[key].check(value, source)
    return merged


def load(path=None, overrides=None):
    """Defaults, then the YAML file at ``path``, then ``overrides`` ({dotted key: value})."""
    config = defaults()
    if path:
        config = merge(config, read_yaml(path), "config file %s" % path)
    if overrides:
        config = merge(config, overrides, "command line")
    return config


def get(config, key):
    """The value of a dotted key in a nested config."""
    node = config
    for part in key.split("."):
        node = node[part]
    return node


class _InOrderDumper(yaml.SafeDumper):
    """A SafeDumper that keeps mappings in their own order, in PyYAML 3.12 and 6 alike.

    PyYAML < 5.1 (JetPack 4.6's python3-yaml is 3.12) sorts every mapping and has no
    ``sort_keys``; a mapping handed over as a list of pairs is never sorted.
    """


_InOrderDumper.add_representer(
    dict, lambda dumper, data: dumper.represent_mapping("tag:yaml.org,2002:map", list(data.items())))


def dump(config):
    """The config as YAML text (for --print-config), in the order of the defaults file."""
    return yaml.dump(config, Dumper=_InOrderDumper, default_flow_style=False)


def _parse_value(setting):
    """An argparse ``type`` for a setting: 'null'/'none' is None where null is allowed."""
    def parse(text):
        if setting.nullable and text.lower() in ("null", "none"):
            return None
        try:
            return int(text) if setting.kind == "int" else float(text) if setting.kind == "float" else text
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not %s" % (text, setting.accepted()))
    parse.__name__ = setting.kind  # argparse names the type in its error message
    return parse


def add_arguments(parser, sections=None, exclude=()):
    """Add one flag per setting (``--no-X`` too for booleans); a flag not given sets nothing.

    ``sections``: only the settings of these sections ("detector", "classifier", ...;
    "general" for the top-level keys), for a command where the others do nothing;
    ``exclude``: dotted keys left out. Each flag's help shows its default.
    """
    groups = {}
    current = flatten(defaults(), DEFAULT_PATH)
    for setting in SCHEMA:
        section = setting.key.split(".")[0] if "." in setting.key else "general"
        if setting.flag is None or setting.key in exclude or (sections and section not in sections):
            continue
        if section not in groups:
            groups[section] = parser.add_argument_group(section + " settings")
        group = groups[section]
        dest = setting.key.replace(".", "__")
        default = current[setting.key]
        if setting.kind == "bool":
            text = "%s (default %s; off: --no-%s; config: %s)" % (
                setting.help, "null" if default is None else "on" if default else "off", setting.flag[2:], setting.key)
            group.add_argument(setting.flag, dest=dest, action="store_const", const=True,
                               default=argparse.SUPPRESS, help=text)
            group.add_argument("--no-" + setting.flag[2:], dest=dest, action="store_const",
                               const=False, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        else:
            text = "%s (%s; default %s; config: %s)" % (setting.help, setting.accepted(),
                                                        "null" if default is None else default, setting.key)
            group.add_argument(setting.flag, dest=dest, type=_parse_value(setting),
                               default=argparse.SUPPRESS,
                               metavar=setting.flag[2:].upper().replace("-", "_"), help=text)
    if "output.http_token" not in exclude and (not sections or "output" in sections):
        # Retired flags parse, so that their use gets RETIRED's message instead of argparse's.
        parser.add_argument("--output-token", dest="output__token", default=argparse.SUPPRESS,
                            help=argparse.SUPPRESS)


def overrides_from_args(args):
    """{dotted key: value} of the setting flags given on the command line."""
    given = vars(args)
    keys = [s.key for s in SCHEMA if s.flag is not None] + list(RETIRED)
    return dict((key, given[key.replace(".", "__")]) for key in keys if key.replace(".", "__") in given)
