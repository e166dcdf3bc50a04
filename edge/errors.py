"""The service's exception types, one per failing part.

Each carries a message that names the problem and, where possible, what to do
about it (a missing GStreamer element names the package that provides it).
"""


class SourceError(RuntimeError):
    """An input (camera, file, stream, image) cannot be opened or read."""


class SinkError(RuntimeError):
    """An output (display, video file, RTSP, HTTP) cannot be opened."""


class ConfigError(ValueError):
    """A configuration value or command-line option is invalid."""


class ModelError(RuntimeError):
    """A model file is missing, unreadable, or its metadata does not match."""
